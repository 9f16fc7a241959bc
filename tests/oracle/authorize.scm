;;; quorate test oracle: what `guix archive --authorize` and libgcrypt make of a key pair.
;;;
;;; For the public key, does what `guix archive --authorize < KEY` does
;;; (guix/scripts/archive.scm authorize-key, guix/pki.scm public-keys->acl,
;;; write-acl, current-acl, authorized-key?): reads the whole file with
;;; string->canonical-sexp, requires a public-key, writes an ACL with it to
;;; ACL-FILE, reads that ACL back and asks whether the key is authorized.  Then
;;; asks libgcrypt for the key's type, curve and size (gcry_pk_get_nbits).  For the
;;; secret key, asks libgcrypt whether it is a consistent key (gcry_pk_testkey).
;;;
;;; Usage: guile --no-auto-compile authorize.scm PUBLIC-KEY-FILE SECRET-KEY-FILE ACL-FILE
;;; Prints:
;;;   public-key authorized <type> <curve> <nbits>    or  public-key rejected <why>
;;;   secret-key consistent                           or  secret-key rejected <why>

(use-modules (gcrypt pk-crypto) (gcrypt internal) (system foreign)
             (ice-9 textual-ports) (ice-9 match))

(define (read-text file)
  (call-with-input-file file get-string-all #:encoding "UTF-8"))

(define pk-get-nbits
  (libgcrypt->procedure unsigned-int "gcry_pk_get_nbits" (list '*)))
(define pk-testkey
  (libgcrypt->procedure int "gcry_pk_testkey" (list '*)))
;; guile-gcrypt keeps the accessor private; the libgcrypt calls above need it.
(define canonical-sexp->pointer
  (@@ (gcrypt pk-crypto) canonical-sexp->pointer))

;; guix/pki.scm public-keys->acl
(define (public-keys->acl keys)
  `(acl ,@(map (lambda (key)
                 `(entry ,(canonical-sexp->sexp key)
                         (tag (guix import))))
               keys)))

;; guix/pki.scm authorized-key?
(define (authorized-key? key acl)
  (let ((key (canonical-sexp->sexp key)))
    (match acl
      (('acl ('entry subject-keys ('tag ('guix 'import))) ...)
       (not (not (member key subject-keys))))
      (_ #f))))

(define (curve-name key)
  (let ((curve (find-sexp-token key 'curve)))
    (and curve (canonical-sexp-nth-data curve 1))))

(define (check-public file acl-file)
  (catch #t
    (lambda ()
      (let ((key (string->canonical-sexp (read-text file))))
        (if (not (eq? 'public-key (canonical-sexp-nth-data key 0)))
            "rejected s-expression-does-not-denote-a-public-key"
            (begin
              ;; write-acl, then current-acl
              (call-with-output-file acl-file
                (lambda (port)
                  (display (canonical-sexp->string
                            (sexp->canonical-sexp (public-keys->acl (list key))))
                           port)))
              (let ((acl (canonical-sexp->sexp
                          (string->canonical-sexp (read-text acl-file)))))
                (if (authorized-key? key acl)
                    (format #f "authorized ~a ~a ~a"
                            (key-type key)
                            (curve-name key)
                            (pk-get-nbits (canonical-sexp->pointer key)))
                    "rejected not-in-acl"))))))
    (lambda (k . args)
      (format #f "rejected ~a" k))))

(define (check-secret file)
  (catch #t
    (lambda ()
      (let ((key (string->canonical-sexp (read-text file))))
        (if (zero? (pk-testkey (canonical-sexp->pointer key)))
            "consistent"
            "rejected gcry_pk_testkey")))
    (lambda (k . args)
      (format #f "rejected ~a" k))))

(match (command-line)
  ((_ public secret acl-file)
   (format #t "public-key ~a~%" (check-public public acl-file))
   (format #t "secret-key ~a~%" (check-secret secret)))
  (_
   (display "usage: authorize.scm PUBLIC-KEY-FILE SECRET-KEY-FILE ACL-FILE\n"
            (current-error-port))
   (exit 2)))
