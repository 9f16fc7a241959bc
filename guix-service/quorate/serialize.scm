;;; (quorate serialize): quorate's TOML configuration (DESIGN §7) from Scheme data.
;;;
;;; No Guix module is used here, so plain Guile can load this file and test it
;;; (tests/deploy.rs); the service in ../quorate.scm turns its records into calls of the
;;; procedures below, field by field.
;;;
;;;   (quorate-toml-string
;;;    (quorate-config-table
;;;     #:listen "0.0.0.0:8080"
;;;     #:caches (list (quorate-cache-table
;;;                     #:name "guix" #:flavor 'guix #:quorum 2
;;;                     #:builders (list (quorate-builder-table #:name "ci" #:keys (list "(public-key ...)")) ...)
;;;                     #:upstreams (list (quorate-upstream-table #:url "https://ci.guix.gnu.org") ...)))))
;;;   => "listen = \"0.0.0.0:8080\"\n\n[[cache]]\nname = \"guix\"\n..."
;;;
;;; A table is an association list of (KEY . VALUE) with string keys, in output order.  VALUE
;;; is a string, an exact integer, #t, a list (a TOML array of such values), an association
;;; list (a sub-table), a vector of tables (an array of tables: [[cache]], [[cache.builder]]),
;;; or #f, which leaves the key out (the Guix convention for "unset"; quorate's config has no
;;; boolean that could mean false).  Any other object, e.g. a Guix file-like object such as
;;; (local-file "builder.pub"), is kept as an opaque fragment, written inside quotes where the
;;; store path will be once Guix lowers it (with mixed-text-file).

(define-module (quorate serialize)
  #:use-module (srfi srfi-1)
  #:use-module (ice-9 exceptions)
  #:use-module (ice-9 format)             ;~4,'0x for \uXXXX escapes
  #:export (quorate-config-table
            quorate-cache-table
            quorate-builder-table
            quorate-revocation-table
            quorate-upstream-table
            quorate-block-table
            quorate-peer-table
            quorate-toml-fragments
            quorate-toml-string
            %store-directory))

(define %store-directory
  ;; Secrets must stay out of the world-readable store (see quorate-cache-table).
  "/gnu/store")

(define (config-error fmt . args)
  (raise-exception
   (make-exception (make-error)
                   (make-exception-with-message
                    (string-append "quorate configuration: "
                                   (apply format #f fmt args))))))


;;;
;;; Validation: each error names the field, as quorate's own errors name the key.
;;;

(define (check-string field value)
  (unless (and (string? value) (not (string-null? value)))
    (config-error "~a must be a non-empty string, got ~s" field value))
  value)

(define (check-optional-string field value)
  (and value (check-string field value)))

(define (check-positive field value)
  (unless (and (exact-integer? value) (positive? value))
    (config-error "~a must be a positive integer, got ~s" field value))
  value)

(define (check-optional-natural field value)
  (and value
       (begin
         (unless (and (exact-integer? value) (>= value 0))
           (config-error "~a must be a non-negative integer, got ~s" field value))
         value)))

(define (check-choice field value choices)
  (let ((text (if (symbol? value) (symbol->string value) value)))
    (unless (and (string? text) (member text choices))
      (config-error "~a must be one of ~a, got ~s"
                    field (string-join choices ", ") value))
    text))

(define (check-secret-file field value)
  ;; A secret is named by its path on the running system: a string outside the store.  A
  ;; file-like object (local-file ...) would be copied into the world-readable store.
  (and value
       (begin
         (unless (and (string? value) (string-prefix? "/" value))
           (config-error "~a must be an absolute file name (a string), got ~s: a file-like \
object would be copied into the world-readable store" field value))
         (when (string-prefix? (string-append %store-directory "/") value)
           (config-error "~a is ~a, in the store, which is world-readable: a secret key \
must not be there" field value))
         value)))

(define (size->string field value)
  ;; quorate reads sizes as strings ("50GiB"); a plain byte count is accepted too.
  (cond ((not value) #f)
        ((string? value) (check-string field value))
        (else (number->string (check-positive field value)))))


;;;
;;; Tables.
;;;

(define (list->optional-vector lst)
  ;; An array of tables, left out when empty.
  (and (pair? lst) (list->vector lst)))

(define* (quorate-builder-table #:key name (keys '()) weight (revoked '()))
  "A [[cache.builder]]: NAME and its public KEYS (all count as one vote, of WEIGHT, default
1).  Nix keys are \"name:base64\"; Guix keys the s-expression itself or the name of a .pub
file.  REVOKED: revocation tables of some of those keys."
  (check-string "builder name" name)
  (when (null? keys)
    (config-error "builder ~s needs at least one key" name))
  `(("name" . ,name)
    ("weight" . ,(and weight (check-positive (string-append "builder " name ": weight")
                                             weight)))
    ("keys" . ,keys)
    ("revoked" . ,(list->optional-vector revoked))))

(define* (quorate-revocation-table #:key key since)
  "A builder's KEY (as written in its keys) revoked from SINCE on, an RFC 3339 UTC time such
as \"2026-11-01T00:00:00Z\": its attestations first recorded from then on stop counting."
  (check-string "revoked key" key)
  (check-string "revoked since" since)
  `(("key" . ,key)
    ("since" . ,since)))

(define* (quorate-block-table #:key path nar-hash reason)
  "A [[cache.blocked]] entry: exactly one of a store PATH or a NAR-HASH, refused whatever
the builders say, and the REASON."
  (when (eq? (not path) (not nar-hash))
    (config-error "a blocked entry names exactly one of path and nar-hash, got ~s and ~s"
                  path nar-hash))
  `(("path" . ,(check-optional-string "blocked path" path))
    ("nar_hash" . ,(check-optional-string "blocked nar-hash" nar-hash))
    ("reason" . ,(check-string "blocked reason" reason))))

(define* (quorate-peer-table #:key url vkey interval)
  "A [[cache.peer]]: another quorate's transparency log URL (\"https://host/tlog/<cache>\"),
optionally its VKEY (else the one it serves at first contact is kept) and the INTERVAL it is
read at (\"10s\")."
  (check-string "peer url" url)
  (unless (or (string-prefix? "http://" url) (string-prefix? "https://" url))
    (config-error "peer url ~s is not an http:// or https:// URL" url))
  `(("url" . ,url)
    ("vkey" . ,(check-optional-string "peer vkey" vkey))
    ("interval" . ,(check-optional-string "peer interval" interval))))

(define* (quorate-upstream-table #:key url priority bearer-token)
  "A [[cache.upstream]]: URL, and optionally its NAR source PRIORITY (lower first) and a
BEARER-TOKEN for a private cache."
  (check-string "upstream url" url)
  (unless (or (string-prefix? "http://" url) (string-prefix? "https://" url))
    (config-error "upstream url ~s is not an http:// or https:// URL" url))
  `(("url" . ,url)
    ("priority" . ,(check-optional-natural "upstream priority" priority))
    ("bearer_token" . ,(check-optional-string "upstream bearer-token" bearer-token))))

(define* (quorate-cache-table #:key name (flavor 'guix) mount store-directory
                              signing-key-file signing-key-name priority
                              (quorum 1) (on-dissent 'refuse)
                              (required-builders '()) (builders '()) (upstreams '())
                              (blocked '()) (peers '()) nar-compression)
  "A [[cache]]: one served substitute endpoint.  FLAVOR is 'nix or 'guix, ON-DISSENT
'refuse or 'majority; SIGNING-KEY-FILE (#f: generated in the state directory on first start)
is a file name on the running system, never a store item."
  (check-string "cache name" name)
  (let ((field (lambda (f) (string-append "cache " name ": " f))))
    `(("name" . ,name)
      ("flavor" . ,(check-choice (field "flavor") flavor '("nix" "guix")))
      ("mount" . ,(check-optional-string (field "mount") mount))
      ("store_dir" . ,(check-optional-string (field "store-directory") store-directory))
      ("signing_key_file" . ,(check-secret-file (field "signing-key-file")
                                                signing-key-file))
      ("signing_key_name" . ,(check-optional-string (field "signing-key-name")
                                                    signing-key-name))
      ("priority" . ,(check-optional-natural (field "priority") priority))
      ("quorum" . ,(check-positive (field "quorum") quorum))
      ("on_dissent" . ,(check-choice (field "on-dissent") on-dissent
                                     '("refuse" "majority")))
      ("required_builders" . ,(and (pair? required-builders) required-builders))
      ("builder" . ,(list->vector builders))
      ("upstream" . ,(list->vector upstreams))
      ("nar_compression" . ,(and nar-compression
                                  (check-choice (field "nar-compression") nar-compression
                                                '("none" "zstd"))))
      ("blocked" . ,(list->optional-vector blocked))
      ("peer" . ,(list->optional-vector peers)))))

(define* (quorate-config-table #:key listen state-directory database-url
                               max-cache-size upstream-timeout (caches '()))
  "The whole file.  #f fields take quorate's defaults (DESIGN §7)."
  (when (null? caches)
    (config-error "at least one cache is required"))
  `(("listen" . ,(check-optional-string "listen" listen))
    ("state_dir" . ,(check-optional-string "state-directory" state-directory))
    ("database_url" . ,(check-optional-string "database-url" database-url))
    ("max_cache_size" . ,(size->string "max-cache-size" max-cache-size))
    ("upstream_timeout" . ,(check-optional-string "upstream-timeout" upstream-timeout))
    ("cache" . ,(list->vector caches))))


;;;
;;; TOML output.
;;;

(define (table? value)
  (and (pair? value)
       (every (lambda (entry) (and (pair? entry) (string? (car entry)))) value)))

(define (opaque? value)
  (not (or (string? value) (number? value) (boolean? value) (symbol? value)
           (list? value) (vector? value))))

(define (escape-string str)
  ;; A TOML basic string: quotes, backslashes and control characters escaped.
  (string-append
   "\""
   (string-concatenate
    (map (lambda (c)
           (case c
             ((#\") "\\\"")
             ((#\\) "\\\\")
             ((#\newline) "\\n")
             ((#\tab) "\\t")
             ((#\return) "\\r")
             ((#\backspace) "\\b")
             ((#\page) "\\f")
             (else
              (let ((n (char->integer c)))
                (if (or (< n #x20) (= n #x7f))
                    (format #f "\\u~4,'0x" n)
                    (string c))))))
         (string->list str)))
   "\""))

(define (bare-key? key)
  (and (not (string-null? key))
       (string-every (lambda (c)
                       (or (char-alphabetic? c) (char-numeric? c)
                           (memv c '(#\- #\_))))
                     key)
       (string-every (lambda (c) (< (char->integer c) 128)) key)))

(define (render-key key)
  (if (bare-key? key) key (escape-string key)))

(define (render-path path)
  (string-join (map render-key path) "."))

(define (scalar key value)
  ;; The fragments of one inline VALUE.
  (cond ((string? value) (list (escape-string value)))
        ((symbol? value) (list (escape-string (symbol->string value))))
        ((exact-integer? value) (list (number->string value)))
        ((and (real? value) (inexact? value) (finite? value))
         (list (number->string value)))
        ((eq? value #t) (list "true"))
        ((list? value)
         (append (list "[")
                 (append-map (lambda (item i)
                               (append (if (zero? i) '() (list ", "))
                                       (scalar key item)))
                             value (iota (length value)))
                 (list "]")))
        ((opaque? value) (list "\"" value "\""))
        (else (config-error "~a: cannot write ~s in TOML" key value))))

(define (table-fragments path table)
  ;; Keys first, then sub-tables, then arrays of tables: in TOML every key after a header
  ;; belongs to that header's table.
  (let* ((present (filter (lambda (entry) (cdr entry)) table))
         (nested? (lambda (entry)
                    (or (vector? (cdr entry)) (table? (cdr entry))))))
    (append
     (append-map (lambda (entry)
                   (append (list (render-key (car entry)) " = ")
                           (scalar (car entry) (cdr entry))
                           (list "\n")))
                 (remove nested? present))
     (append-map (lambda (entry)
                   (let ((sub (append path (list (car entry)))))
                     (if (vector? (cdr entry))
                         (append-map (lambda (element)
                                       (unless (table? element)
                                         (config-error "~a: ~s is not a table"
                                                       (render-path sub) element))
                                       (append (list "\n[[" (render-path sub) "]]\n")
                                               (table-fragments sub element)))
                                     (vector->list (cdr entry)))
                         (append (list "\n[" (render-path sub) "]\n")
                                 (table-fragments sub (cdr entry))))))
                 (filter nested? present)))))

(define (quorate-toml-fragments table)
  "TABLE as TOML: a list of strings and, in place of opaque values, the objects themselves
(for Guix's mixed-text-file)."
  (table-fragments '() table))

(define (quorate-toml-string table)
  "TABLE as a TOML string; every value must be plain data."
  (let ((fragments (quorate-toml-fragments table)))
    (unless (every string? fragments)
      (config-error "~s cannot be written without Guix; use quorate-toml-fragments"
                    (find (negate string?) fragments)))
    (string-concatenate fragments)))
