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

(include "common.scm")

(define (run-job line)
  (match (string-split line #\tab)
    ((secret-file public-file signed-file tail-file host output-file)
     (let ((secret (string->canonical-sexp (read-text secret-file)))
           (public (string->canonical-sexp (read-text public-file)))
           (signed-part (read-text signed-file)))
       (write-text output-file
                   (string-append signed-part
                                  "Signature: "
                                  (signature-field host signed-part secret public)
                                  "\n"
                                  (read-text tail-file)))))
    (_ (error "malformed job line" line))))

(run-jobs "sign.scm" run-job)
