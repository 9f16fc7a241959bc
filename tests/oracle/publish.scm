;;; quorate test oracle: a `guix publish` stand-in for store items given as NAR files.
;;;
;;; Writes each narinfo as guix publish does (guix/scripts/publish.scm narinfo-string
;;; and signed-string, guix/pki.scm signature-sexp), with libgcrypt doing all the
;;; cryptography: NarHash is libgcrypt's SHA-256 of the NAR file in nix-base32,
;;; NarSize its length, References the basenames joined by spaces; the signature
;;; covers the SHA-256 of the text before "Signature:".  The URL groups
;;; (URL: nar/<compression>/<basename>, Compression, FileSize) go where LAYOUT says:
;;;   publish  right after StorePath, inside the signed part, as `guix publish`'s
;;;            narinfo-string writes them (ci.guix.gnu.org);
;;;   herder   after the Signature line, unsigned, as bordeaux.guix.gnu.org serves
;;;            them (tests/vectors/guix/bordeaux-hello-2.12.2.narinfo).
;;;
;;; Usage: guile --no-auto-compile publish.scm JOBS
;;; JOBS has one job per line, tab-separated:
;;;   SECRET-KEY-FILE PUBLIC-KEY-FILE HOST LAYOUT STORE-PATH NAR-FILE REFERENCES DERIVER
;;;   SYSTEM OUTPUT-FILE GROUP...
;;; REFERENCES: basenames separated by spaces, empty for none.  DERIVER (a basename)
;;; and SYSTEM: empty to leave the field out.  Each GROUP is COMPRESSION=FILE, FILE
;;; holding the NAR compressed that way (its size is the FileSize); "none=" stands
;;; for the NAR itself.  OUTPUT-FILE receives the narinfo.

(include "common.scm")

;; guix/base32.scm bytevector->nix-base32-string: 5-bit groups taken from the
;; end of the bytevector, least significant bits first.
(define nix-base32-chars "0123456789abcdfghijklmnpqrsvwxyz")

(define (bytevector->nix-base32-string bv)
  (let* ((size (bytevector-length bv))
         (len (quotient (+ (* size 8) 4) 5)))
    (let loop ((n (- len 1)) (chars '()))
      (if (< n 0)
          (list->string (reverse chars))
          (let* ((b (* n 5))
                 (i (quotient b 8))
                 (j (remainder b 8))
                 (c (logior (ash (bytevector-u8-ref bv i) (- j))
                            (if (< (+ i 1) size)
                                (ash (bytevector-u8-ref bv (+ i 1)) (- 8 j))
                                0))))
            (loop (- n 1)
                  (cons (string-ref nix-base32-chars (logand c 31)) chars)))))))

(define (basename* file)
  (let ((at (string-rindex file #\/)))
    (if at (substring file (+ at 1)) file)))

(define (url-group basename nar-size group)
  (match (string-split group #\=)
    ((compression file)
     (let ((size (if (string-null? file) nar-size (stat:size (stat file)))))
       (format #f "URL: nar/~a~a~%Compression: ~a~%FileSize: ~d~%"
               (if (string=? compression "none") ""
                   (string-append compression "/"))
               basename compression size)))
    (_ (error "malformed URL group" group))))

(define (run-job line)
  (match (string-split line #\tab)
    ((secret-file public-file host layout store-path nar-file references deriver system
                  output-file groups ...)
     (let* ((secret (string->canonical-sexp (read-text secret-file)))
            (public (string->canonical-sexp (read-text public-file)))
            (nar-size (stat:size (stat nar-file)))
            (url-groups (string-concatenate
                         (map (lambda (group)
                                (url-group (basename* store-path) nar-size group))
                              groups)))
            (signed-urls (match layout
                           ("publish" url-groups)
                           ("herder" "")
                           (_ (error "unknown layout" layout))))
            (info (string-append
                   (format #f "StorePath: ~a~%~aNarHash: sha256:~a~%NarSize: ~d~%References: ~a~%"
                           store-path
                           signed-urls
                           (bytevector->nix-base32-string (file-sha256 nar-file))
                           nar-size references)
                   (if (string-null? system) ""
                       (format #f "System: ~a~%" system))
                   (if (string-null? deriver) ""
                       (format #f "Deriver: ~a~%" deriver))))
            (signature (signature-field host info secret public)))
       (write-text output-file
                   (string-append
                    (format #f "~aSignature: ~a~%" info signature)
                    (if (string-null? signed-urls) url-groups "")))))
    (_ (error "malformed job line" line))))

(run-jobs "publish.scm" run-job)
