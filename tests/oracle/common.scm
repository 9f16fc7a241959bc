;;; quorate test oracle: what the JOBS-file scripts (publish.scm, sign.scm,
;;; verify.scm) share, spliced into each by `(include "common.scm")`: UTF-8 files,
;;; the signature `guix publish` puts on a narinfo, and the loop over a JOBS file.

(use-modules (gcrypt pk-crypto) (gcrypt hash) (gcrypt base64)
             (rnrs bytevectors) (ice-9 textual-ports) (ice-9 match)
             (srfi srfi-1))

(define (read-text file)
  (call-with-input-file file get-string-all #:encoding "UTF-8"))

(define (write-text file text)
  (call-with-output-file file
    (lambda (port) (display text port))
    #:encoding "UTF-8"))

;; guix/scripts/publish.scm signed-string + guix/pki.scm signature-sexp: the
;; s-expression (signature <data> <sig-val> <public-key>), <data> built by
;; guile-gcrypt's bytevector->hash-data over the SHA-256 of TEXT, <sig-val> by
;; gcry_pk_sign.
(define (signed-string text secret public)
  (let* ((hash (bytevector->hash-data (sha256 (string->utf8 text))
                                      #:key-type (key-type public)))
         (sig-val (sign hash secret)))
    (string->canonical-sexp
     (format #f "(signature ~a ~a ~a)"
             (canonical-sexp->string hash)
             (canonical-sexp->string sig-val)
             (canonical-sexp->string public)))))

;; The value of the "Signature:" field over TEXT: "1;<host>;<base64>".
(define (signature-field host text secret public)
  (string-append "1;" host ";"
                 (base64-encode
                  (string->utf8
                   (canonical-sexp->string (signed-string text secret public))))))

;; The program: RUN-JOB on each non-empty line of the JOBS file named on the
;; command line.
(define (run-jobs script run-job)
  (match (command-line)
    ((_ jobs)
     (for-each run-job
               (remove string-null? (string-split (read-text jobs) #\newline))))
    (_
     (format (current-error-port) "usage: ~a JOBS~%" script)
     (exit 2))))
