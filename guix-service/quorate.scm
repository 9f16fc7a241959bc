;;; (quorate): quorate as a Guix System service, shaped like guix-publish-service-type: a
;;; configuration record, a system account, a Shepherd service and an activation step.
;;;
;;; Put this directory on the load path (guix system reconfigure -L guix-service ...), then
;;; in the operating-system's services:
;;;
;;;   (use-modules (quorate))
;;;   (service quorate-service-type
;;;            (quorate-configuration
;;;             (package quorate)          ;a package with bin/quorate (no default: not in Guix)
;;;             (listen "0.0.0.0:8080")
;;;             (caches %quorate-guix-build-farms)))
;;;
;;; and point guix-daemon's substitute-urls at http://host:8080 after authorizing quorate's
;;; key (state-directory/keys/guix.guix.pub, generated on first start).
;;;
;;; The config file is rendered to TOML by (quorate serialize), which needs no Guix and is
;;; what the tests run; this file only maps records to it.  Like the NixOS module, the rendered
;;; file goes through `quorate check-config` when the system is built.
;;;
;;; Secrets: signing-key-file is a file name on the running system (readable by the
;;; "quorate" user, mode 600), never a file-like object, which would be copied into the
;;; world-readable store; the serializer refuses both that and a /gnu/store file name.

(define-module (quorate)
  #:use-module (gnu services)
  #:use-module (gnu services shepherd)
  #:use-module (gnu system shadow)
  #:use-module ((gnu packages admin) #:select (shadow))
  #:use-module (guix gexp)
  #:use-module (guix records)
  #:use-module (quorate serialize)
  #:export (quorate-builder
            quorate-builder?
            quorate-builder-name
            quorate-builder-keys
            quorate-builder-weight
            quorate-builder-revoked

            quorate-revocation
            quorate-revocation?
            quorate-revocation-key
            quorate-revocation-since

            quorate-block
            quorate-block?
            quorate-block-path
            quorate-block-nar-hash
            quorate-block-reason

            quorate-peer
            quorate-peer?
            quorate-peer-url
            quorate-peer-vkey
            quorate-peer-interval

            quorate-upstream
            quorate-upstream?
            quorate-upstream-url
            quorate-upstream-priority
            quorate-upstream-bearer-token

            quorate-cache
            quorate-cache?
            quorate-cache-name
            quorate-cache-flavor
            quorate-cache-mount
            quorate-cache-quorum
            quorate-cache-on-dissent
            quorate-cache-builders
            quorate-cache-upstreams
            quorate-cache-blocked
            quorate-cache-peers
            quorate-cache-nar-compression

            quorate-configuration
            quorate-configuration?
            quorate-configuration-package
            quorate-configuration-listen
            quorate-configuration-state-directory
            quorate-configuration-database-url
            quorate-configuration-caches

            %quorate-guix-build-farms
            quorate-configuration-file
            quorate-service-type))

;;; Commentary:
;;;
;;; The records mirror quorate's TOML (DESIGN §7) with Scheme names: [[cache.builder]] is a
;;; <quorate-builder>, [[cache.upstream]] a <quorate-upstream>, [[cache]] a <quorate-cache>.
;;; #f means "quorate's default".
;;;
;;; Code:

(define-record-type* <quorate-revocation>
  quorate-revocation make-quorate-revocation
  quorate-revocation?
  (key   quorate-revocation-key)                  ;string: one of the builder's keys
  (since quorate-revocation-since))               ;string: RFC 3339 UTC, "2026-11-01T00:00:00Z"

(define-record-type* <quorate-builder>
  quorate-builder make-quorate-builder
  quorate-builder?
  (name    quorate-builder-name)                  ;string
  (keys    quorate-builder-keys)                  ;list of strings or file-like (.pub files)
  (weight  quorate-builder-weight                 ;#f (1) | positive integer
           (default #f))
  (revoked quorate-builder-revoked                ;list of <quorate-revocation>
           (default '())))

(define-record-type* <quorate-block>
  quorate-block make-quorate-block
  quorate-block?
  (path     quorate-block-path                    ;#f | store file name
            (default #f))
  (nar-hash quorate-block-nar-hash                ;#f | "sha256:..."
            (default #f))
  (reason   quorate-block-reason))                ;string

(define-record-type* <quorate-peer>
  quorate-peer make-quorate-peer
  quorate-peer?
  (url      quorate-peer-url)                     ;string: https://host/tlog/<cache>
  (vkey     quorate-peer-vkey                     ;#f (kept from first contact) | string
            (default #f))
  (interval quorate-peer-interval                 ;#f ("10s") | string
            (default #f)))

(define-record-type* <quorate-upstream>
  quorate-upstream make-quorate-upstream
  quorate-upstream?
  (url          quorate-upstream-url)             ;string
  (priority     quorate-upstream-priority         ;#f | integer: NAR source, lower first
                (default #f))
  (bearer-token quorate-upstream-bearer-token     ;#f | string (ends up in the store)
                (default #f)))

(define-record-type* <quorate-cache>
  quorate-cache make-quorate-cache
  quorate-cache?
  (name              quorate-cache-name)          ;string
  (flavor            quorate-cache-flavor         ;'guix | 'nix
                     (default 'guix))
  (mount             quorate-cache-mount          ;string: URL prefix
                     (default "/"))
  (store-directory   quorate-cache-store-directory ;#f | string
                     (default #f))
  (signing-key-file  quorate-cache-signing-key-file ;#f | string, outside the store
                     (default #f))
  (signing-key-name  quorate-cache-signing-key-name ;#f | string (generated Nix keys)
                     (default #f))
  (priority          quorate-cache-priority       ;#f | integer: nix-cache-info Priority
                     (default #f))
  (quorum            quorate-cache-quorum         ;integer: builders that must agree
                     (default 1))
  (on-dissent        quorate-cache-on-dissent     ;'refuse | 'majority
                     (default 'refuse))
  (required-builders quorate-cache-required-builders ;list of builder names
                     (default '()))
  (builders          quorate-cache-builders)      ;list of <quorate-builder>
  (upstreams         quorate-cache-upstreams)     ;list of <quorate-upstream>
  (blocked           quorate-cache-blocked        ;list of <quorate-block>
                     (default '()))
  (peers             quorate-cache-peers          ;list of <quorate-peer>: logs followed
                     (default '()))
  (nar-compression   quorate-cache-nar-compression ;#f ('none) | 'zstd: NARs for clients
                     (default #f)))

(define %quorate-guix-build-farms
  ;; Guix's two build farms are built and keyed independently (Cuirass on ci.guix.gnu.org,
  ;; the Build Coordinator on bordeaux.guix.gnu.org): serve a path only when both built the
  ;; same bytes.  Anything else is built locally, the safe fallback.
  (list (quorate-cache
         (name "guix")
         (flavor 'guix)
         (quorum 2)
         (builders
          (list (quorate-builder
                 (name "ci.guix.gnu.org")
                 (keys (list "(public-key (ecc (curve Ed25519) (q #8D156F295D24B0D9A86FA5741A840FF2D24F60F7B6C4134814AD55625971B394#)))")))
                (quorate-builder
                 (name "bordeaux.guix.gnu.org")
                 (keys (list "(public-key (ecc (curve Ed25519) (q #7D602902D3A2DBB83F8A0FB98602A754C5493B0B778C8D1DD4E0F41DE14DE34F#)))")))))
         (upstreams
          (list (quorate-upstream (url "https://ci.guix.gnu.org"))
                (quorate-upstream (url "https://bordeaux.guix.gnu.org")))))))

(define-record-type* <quorate-configuration>
  quorate-configuration make-quorate-configuration
  quorate-configuration?
  (package          quorate-configuration-package) ;file-like with bin/quorate
  (listen           quorate-configuration-listen  ;string
                    (default "127.0.0.1:8080"))
  (state-directory  quorate-configuration-state-directory ;string
                    (default "/var/lib/quorate"))
  (database-url     quorate-configuration-database-url ;#f (SQLite) | "postgres://..."
                    (default #f))
  (max-cache-size   quorate-configuration-max-cache-size ;#f | "50GiB" | bytes
                    (default #f))
  (upstream-timeout quorate-configuration-upstream-timeout ;#f | "10s"
                    (default #f))
  (caches           quorate-configuration-caches  ;list of <quorate-cache>
                    (default %quorate-guix-build-farms))
  (requirement      quorate-configuration-requirement ;extra Shepherd services, e.g. '(postgres)
                    (default '()))
  (log-file         quorate-configuration-log-file ;string
                    (default "/var/log/quorate.log"))
  (check-config?    quorate-configuration-check-config? ;boolean
                    (default #t)))



;;;
;;; Records to the serializer's tables.
;;;

(define (quorate-revocation->table revocation)
  (quorate-revocation-table #:key (quorate-revocation-key revocation)
                            #:since (quorate-revocation-since revocation)))

(define (quorate-builder->table builder)
  (quorate-builder-table #:name (quorate-builder-name builder)
                         #:keys (quorate-builder-keys builder)
                         #:weight (quorate-builder-weight builder)
                         #:revoked (map quorate-revocation->table
                                        (quorate-builder-revoked builder))))

(define (quorate-block->table block)
  (quorate-block-table #:path (quorate-block-path block)
                       #:nar-hash (quorate-block-nar-hash block)
                       #:reason (quorate-block-reason block)))

(define (quorate-peer->table peer)
  (quorate-peer-table #:url (quorate-peer-url peer)
                      #:vkey (quorate-peer-vkey peer)
                      #:interval (quorate-peer-interval peer)))

(define (quorate-upstream->table upstream)
  (quorate-upstream-table #:url (quorate-upstream-url upstream)
                          #:priority (quorate-upstream-priority upstream)
                          #:bearer-token (quorate-upstream-bearer-token upstream)))

(define (quorate-cache->table cache)
  (quorate-cache-table
   #:name (quorate-cache-name cache)
   #:flavor (quorate-cache-flavor cache)
   #:mount (quorate-cache-mount cache)
   #:store-directory (quorate-cache-store-directory cache)
   #:signing-key-file (quorate-cache-signing-key-file cache)
   #:signing-key-name (quorate-cache-signing-key-name cache)
   #:priority (quorate-cache-priority cache)
   #:quorum (quorate-cache-quorum cache)
   #:on-dissent (quorate-cache-on-dissent cache)
   #:required-builders (quorate-cache-required-builders cache)
   #:builders (map quorate-builder->table (quorate-cache-builders cache))
   #:upstreams (map quorate-upstream->table (quorate-cache-upstreams cache))
   #:blocked (map quorate-block->table (quorate-cache-blocked cache))
   #:peers (map quorate-peer->table (quorate-cache-peers cache))
   #:nar-compression (quorate-cache-nar-compression cache)))

(define (quorate-configuration->table config)
  (quorate-config-table
   #:listen (quorate-configuration-listen config)
   #:state-directory (quorate-configuration-state-directory config)
   #:database-url (quorate-configuration-database-url config)
   #:max-cache-size (quorate-configuration-max-cache-size config)
   #:upstream-timeout (quorate-configuration-upstream-timeout config)
   #:caches (map quorate-cache->table (quorate-configuration-caches config))))

(define (quorate-configuration-file config)
  "The TOML file quorate runs with, checked by `quorate check-config` unless CONFIG says
not to."
  (let ((file (apply mixed-text-file "quorate.toml"
                     (quorate-toml-fragments
                      (quorate-configuration->table config))))
        (quorate (file-append (quorate-configuration-package config)
                              "/bin/quorate")))
    (if (quorate-configuration-check-config? config)
        (computed-file "quorate-checked.toml"
                       #~(begin
                           (unless (zero? (system* #$quorate "check-config"
                                                   "--config" #$file))
                             (error "quorate check-config refused" #$file))
                           (copy-file #$file #$output)))
        file)))


;;;
;;; The service.
;;;

(define (quorate-shepherd-service config)
  (match-record config <quorate-configuration>
    (package requirement log-file)
    (list (shepherd-service
           (documentation "Run quorate, a substitute cache proxy that serves a store \
path only when a quorum of independent builders agree on it.")
           (provision '(quorate))
           (requirement `(user-processes networking ,@requirement))
           (start #~(make-forkexec-constructor
                     (list #$(file-append package "/bin/quorate")
                           "serve" "--config"
                           #$(quorate-configuration-file config))
                     #:user "quorate"
                     #:group "quorate"
                     #:log-file #$log-file))
           (stop #~(make-kill-destructor))))))

(define %quorate-accounts
  (list (user-group (name "quorate") (system? #t))
        (user-account
         (name "quorate")
         (group "quorate")
         (system? #t)
         (comment "quorate substitute proxy")
         (home-directory "/var/empty")
         (shell (file-append shadow "/sbin/nologin")))))

(define (quorate-activation config)
  ;; The state directory holds the NAR store, the SQLite database and generated secret
  ;; keys: owned by quorate, private.
  (let ((directory (quorate-configuration-state-directory config)))
    (with-imported-modules '((guix build utils))
      #~(begin
          (use-modules (guix build utils))
          (mkdir-p #$directory)
          (let ((user (getpwnam "quorate")))
            (chown #$directory (passwd:uid user) (passwd:gid user))
            (chmod #$directory #o700))))))

(define quorate-service-type
  (service-type
   (name 'quorate)
   (extensions
    (list (service-extension shepherd-root-service-type
                             quorate-shepherd-service)
          (service-extension account-service-type
                             (const %quorate-accounts))
          (service-extension activation-service-type
                             quorate-activation)))
   (description
    "Run @command{quorate}, a substitute cache proxy for Guix and Nix that serves a
store item only when a quorum of independently keyed builders signed the same content.")))

;;; quorate.scm ends here
