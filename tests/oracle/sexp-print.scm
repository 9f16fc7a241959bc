;;; quorate test oracle: libgcrypt's s-expression reader and printer.
;;;
;;; Reads lines from standard input, each the hex of one s-expression's bytes
;;; (advanced or canonical form), parses it with gcry_sexp_new and prints it
;;; with gcry_sexp_sprint.  Output, one line per input line:
;;;   ERR                                   if libgcrypt rejects the input
;;;   <hex of canonical> <hex of advanced>  otherwise
;;;
;;; Usage: guile --no-auto-compile sexp-print.scm < INPUT

(use-modules (gcrypt internal) (gcrypt base16) (system foreign)
             (rnrs bytevectors) (ice-9 rdelim))

(define sexp-new
  (libgcrypt->procedure int "gcry_sexp_new" (list '* '* size_t int)))
(define sexp-sprint
  (libgcrypt->procedure size_t "gcry_sexp_sprint" (list '* int '* size_t)))
(define sexp-release
  (libgcrypt->procedure void "gcry_sexp_release" (list '*)))

(define canonical-mode 1)
(define advanced-mode 3)

;; Bytes -> sexp pointer, or #f when libgcrypt rejects them.
(define (parse bytes)
  (let* ((result (make-bytevector (sizeof '*) 0))
         (err (sexp-new (bytevector->pointer result)
                        (bytevector->pointer bytes)
                        (bytevector-length bytes)
                        0)))
    (and (zero? err)
         (dereference-pointer (bytevector->pointer result)))))

(define (print sexp mode)
  (let* ((needed (sexp-sprint sexp mode %null-pointer 0))
         (buffer (make-bytevector (+ needed 1) 0))
         (written (sexp-sprint sexp mode (bytevector->pointer buffer)
                               (bytevector-length buffer)))
         (out (make-bytevector written)))
    (bytevector-copy! buffer 0 out 0 written)
    out))

(let loop ()
  (let ((line (read-line)))
    (unless (eof-object? line)
      (let ((sexp (and (not (string-null? line))
                       (parse (base16-string->bytevector line)))))
        (if sexp
            (begin
              (format #t "~a ~a~%"
                      (bytevector->base16-string (print sexp canonical-mode))
                      (bytevector->base16-string (print sexp advanced-mode)))
              (sexp-release sexp))
            (display "ERR\n")))
      (loop))))
