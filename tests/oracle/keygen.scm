;;; quorate test oracle: Guix signing keys made by libgcrypt.
;;;
;;; Generates key pairs the way `guix archive --generate-key` does: libgcrypt's
;;; (genkey (ecdsa (curve Ed25519) (flags rfc6979))), i.e. ECDSA on the Ed25519
;;; curve with RFC 6979 nonces, written as advanced s-expressions the way Guix
;;; writes /etc/guix/signing-key.{pub,sec}.
;;;
;;; Usage: guile --no-auto-compile keygen.scm OUTDIR COUNT
;;; Writes OUTDIR/libgcrypt-<i>.pub and OUTDIR/libgcrypt-<i>.sec for i < COUNT.

(use-modules (gcrypt pk-crypto) (ice-9 match))

(define key-parameters
  "(genkey (ecdsa (curve Ed25519) (flags rfc6979)))")

(define (write-text file text)
  (call-with-output-file file
    (lambda (port) (display text port))
    #:encoding "UTF-8"))

(define (generate-pair! base)
  (let ((pair (generate-key (string->canonical-sexp key-parameters))))
    (write-text (string-append base ".pub")
                (canonical-sexp->string (find-sexp-token pair 'public-key)))
    (write-text (string-append base ".sec")
                (canonical-sexp->string (find-sexp-token pair 'private-key)))))

(match (command-line)
  ((_ outdir count)
   (let loop ((i 0))
     (when (< i (string->number count))
       (generate-pair! (string-append outdir "/libgcrypt-" (number->string i)))
       (loop (+ i 1)))))
  (_
   (display "usage: keygen.scm OUTDIR COUNT\n" (current-error-port))
   (exit 2)))
