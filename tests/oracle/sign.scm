;;; quorate test oracle: narinfos signed by libgcrypt, as `guix publish` signs them.
;;;
;;; The signature covers the SHA-256 of the narinfo text before "Signature:".
;;; It is the advanced s-expression
;;;   (signature <data> <sig-val> <public-key>)
;;; with <data> built by guile-gcrypt's bytevector->hash-data and <sig-val> by
;;; gcry_pk_sign, base64-encoded into "Signature: 1;<host>;<base64>".
;;;
;;; Usage: guile --no-auto-compile sign.scm JOBS
;;; JOBS has one job per line, tab-separated:
;;;   SECRET-KEY-FILE PUBLIC-KEY-FILE SIGNED-PART-FILE TAIL-FILE HOST OUTPUT-FILE
;;; OUTPUT-FILE receives: signed part, the Signature line, then the tail
;;; (the unsigned URL/Compression/FileSize groups).

(use-modules (gcrypt pk-crypto) (gcrypt hash) (gcrypt base64)
             (rnrs bytevectors) (ice-9 textual-ports) (ice-9 match)
             (srfi srfi-1))

(define (read-text file)
  (call-with-input-file file get-string-all #:encoding "UTF-8"))

(define (write-text file text)
  (call-with-output-file file
    (lambda (port) (display text port))
    #:encoding "UTF-8"))

(define (signature-value host signed-part secret public)
  (let* ((digest (sha256 (string->utf8 signed-part)))
         (data (bytevector->hash-data digest #:key-type (key-type public)))
         (sig-val (sign data secret))
         (signature (string->canonical-sexp
                     (string-append "(signature "
                                    (canonical-sexp->string data) " "
                                    (canonical-sexp->string sig-val) " "
                                    (canonical-sexp->string public) ")"))))
    (string-append "1;" host ";"
                   (base64-encode
                    (string->utf8 (canonical-sexp->string signature))))))

(define (run-job line)
  (match (string-split line #\tab)
    ((secret-file public-file signed-file tail-file host output-file)
     (let ((secret (string->canonical-sexp (read-text secret-file)))
           (public (string->canonical-sexp (read-text public-file)))
           (signed-part (read-text signed-file)))
       (write-text output-file
                   (string-append signed-part
                                  "Signature: "
                                  (signature-value host signed-part secret public)
                                  "\n"
                                  (read-text tail-file)))))
    (_ (error "malformed job line" line))))

(match (command-line)
  ((_ jobs)
   (for-each run-job
             (remove string-null? (string-split (read-text jobs) #\newline))))
  (_
   (display "usage: sign.scm JOBS\n" (current-error-port))
   (exit 2)))
