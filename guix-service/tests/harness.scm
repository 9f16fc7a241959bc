;;; Runs the Guix service file with plain Guile, no Guix installed (for tests/deploy.rs).
;;;
;;;   guile --no-auto-compile -L guix-service guix-service/tests/harness.scm forms FILE
;;;   guile --no-auto-compile -L guix-service guix-service/tests/harness.scm render FILE CONFIG
;;;
;;; `forms` reads every top-level form of FILE, with Guix's G-expression syntax (#~ #$ #$@ #+)
;;; registered with the reader as (guix gexp) does, and prints one fact per line:
;;;   forms N                 top-level forms read
;;;   defines NAME            each top-level definition (records: constructor, predicate,
;;;                           accessors)
;;;   missing-export NAME     an exported name that nothing in FILE defines
;;;
;;; `render` evaluates FILE's record types, its record->table mappings and its constants in a
;;; module that has (quorate serialize) and a stand-in for Guix's define-record-type* (field
;;; defaults, mandatory fields, unknown fields refused; nothing else), then evaluates the
;;; expression in CONFIG, a <quorate-configuration>, and prints the TOML that the service
;;; would write.  Forms that need Guix proper (G-expressions, Shepherd, accounts) are skipped:
;;; `forms` is what checks them.

(use-modules (ice-9 match) (srfi srfi-1) (srfi srfi-9))

;;; G-expression reader syntax.

(define (ungexp-reader splicing plain)
  (lambda (chr port)
    (let ((splice? (eqv? (peek-char port) #\@)))
      (when splice? (read-char port))
      (list (if splice? splicing plain) (read port)))))

(read-hash-extend #\~ (lambda (chr port) (list 'gexp (read port))))
(read-hash-extend #\$ (ungexp-reader 'ungexp-splicing 'ungexp))
(read-hash-extend #\+ (ungexp-reader 'ungexp-native-splicing 'ungexp-native))

(define (read-all file)
  (call-with-input-file file
    (lambda (port)
      (let loop ((forms '()))
        (let ((form (read port)))
          (if (eof-object? form)
              (reverse forms)
              (loop (cons form forms))))))))

(define (defined-names form)
  (match form
    (('define (name . _) . _) (list name))
    (('define (? symbol? name) . _) (list name))
    (('define-record-type* _ constructor make predicate fields ...)
     (cons* constructor make predicate
            (filter-map (match-lambda ((field accessor . _) accessor) (_ #f))
                        fields)))
    (_ '())))

(define (exports forms)
  (append-map (match-lambda
                (('define-module _ options ...)
                 (let loop ((options options) (found '()))
                   (match options
                     ((#:export (names ...) rest ...) (loop rest (append found names)))
                     ((_ rest ...) (loop rest found))
                     (() found))))
                (_ '()))
              forms))

;;; The stand-in for (guix records) define-record-type*.

(define-record-type <stand-in>
  (make-stand-in type fields)
  stand-in?
  (type stand-in-type)
  (fields stand-in-fields))                       ;alist: field -> value

(define (stand-in-field record type field default)
  (unless (and (stand-in? record) (eq? (stand-in-type record) type))
    (error "not a record of type" type record))
  (match (assq field (stand-in-fields record))
    ((_ . value) value)
    (#f (if default
            (default)
            (error "missing mandatory field" type field)))))

(define-syntax field-default
  (syntax-rules (default)
    ((_ ()) #f)
    ((_ ((default expression) . _)) (lambda () expression))
    ((_ (_ . rest)) (field-default rest))))

(define-syntax define-record-type*
  (lambda (s)
    (syntax-case s ()
      ((_ type constructor make predicate (field accessor . options) ...)
       #'(begin
           (define-syntax constructor
             (syntax-rules ()
               ((_ clause (... ...))
                (make-stand-in 'type
                               (check-fields 'type '(field ...)
                                             (clauses->alist clause (... ...)))))))
           (define (make . _) (error "positional constructor not provided" 'make))
           (define (predicate x)
             (and (stand-in? x) (eq? (stand-in-type x) 'type)))
           (define (accessor record)
             (stand-in-field record 'type 'field (field-default options)))
           ...)))))

(define-syntax clauses->alist
  (syntax-rules ()
    ((_ (field value) ...) (list (cons 'field value) ...))))

(define (check-fields type known alist)
  (for-each (lambda (entry)
              (unless (memq (car entry) known)
                (error "unknown field" type (car entry))))
            alist)
  alist)

(define (renderable? form)
  ;; Record types, record->table mappings and constants: the parts with no Guix in them.
  (match form
    (('define-record-type* . _) #t)
    (('define ((? symbol? name) . _) . _)
     (string-suffix? "->table" (symbol->string name)))
    (('define (? symbol? name) . _)
     (string-prefix? "%quorate-guix" (symbol->string name)))
    (_ #f)))

(define (render file config-file)
  (let ((module (make-fresh-user-module)))
    (module-use! module (resolve-interface '(quorate serialize)))
    (module-use! module (resolve-interface '(guile)))
    (module-define! module 'define-record-type*
                    (module-ref (current-module) 'define-record-type*))
    (for-each (lambda (name)
                (module-define! module name (module-ref (current-module) name)))
              '(make-stand-in stand-in? stand-in-field field-default
                clauses->alist check-fields))
    (for-each (lambda (form) (eval form module))
              (filter renderable? (read-all file)))
    (let ((config (eval (car (read-all config-file)) module)))
      (display (quorate-toml-string
                ((module-ref module 'quorate-configuration->table) config))))))

(use-modules (quorate serialize))

(match (command-line)
  ((_ "forms" file)
   (let* ((forms (read-all file))
          (defined (append-map defined-names forms)))
     (format #t "forms ~a~%" (length forms))
     (for-each (lambda (name) (format #t "defines ~a~%" name)) defined)
     (for-each (lambda (name)
                 (unless (memq name defined)
                   (format #t "missing-export ~a~%" name)))
               (exports forms))))
  ((_ "render" file config-file)
   (render file config-file))
  (_ (format (current-error-port)
             "usage: harness.scm forms FILE | render FILE CONFIG~%")
     (exit 2)))
