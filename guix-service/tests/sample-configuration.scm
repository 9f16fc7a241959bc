;;; A quorate-configuration with a Nix and a Guix cache side by side, as an operator would
;;; write it in an operating-system (tests/deploy.rs renders it with harness.scm).  The Guix
;;; builder "home-rebuilder" names its key as a .pub file beside the rendered config.
(quorate-configuration
 (package "quorate")                    ;not read by the serializer
 (listen "0.0.0.0:8080")
 (database-url "postgresql:///quorate?host=/var/run/postgresql&user=quorate")
 (max-cache-size "50GiB")
 (upstream-timeout "15s")
 (caches
  (list (quorate-cache
         (name "nixos")
         (flavor 'nix)
         (mount "/nix")
         (signing-key-file "/etc/quorate/nix.sec")
         (priority 40)
         (builders
          (list (quorate-builder
                 (name "hydra")
                 (keys '("cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=")))))
         (upstreams
          (list (quorate-upstream (url "https://cache.nixos.org") (priority 10)))))
        (quorate-cache
         (name "guix")
         (mount "/guix")
         (quorum 2)
         (on-dissent 'majority)
         (required-builders '("ci.guix.gnu.org"))
         (signing-key-file "/etc/quorate/guix.sec")
         (builders
          (list (quorate-builder
                 (name "ci.guix.gnu.org")
                 (keys '("(public-key (ecc (curve Ed25519) (q #8D156F295D24B0D9A86FA5741A840FF2D24F60F7B6C4134814AD55625971B394#)))")))
                (quorate-builder
                 (name "bordeaux.guix.gnu.org")
                 (weight 2)
                 (keys '("(public-key (ecc (curve Ed25519) (q #7D602902D3A2DBB83F8A0FB98602A754C5493B0B778C8D1DD4E0F41DE14DE34F#)))")))
                (quorate-builder
                 (name "home-rebuilder")
                 (keys '("home-rebuilder.pub"))
                 (revoked (list (quorate-revocation
                                 (key "home-rebuilder.pub")
                                 (since "2026-11-01T00:00:00Z")))))))
         (blocked
          (list (quorate-block
                 (path "/gnu/store/wa25gr1jwvlca76cr58b77168s56r7fz-openssl-3.0.1")
                 (reason "CVE-2026-0001"))
                (quorate-block
                 (nar-hash "sha256:1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i")
                 (reason "a bad build"))))
         (nar-compression 'zstd)
         (peers
          (list (quorate-peer (url "https://peer.lan/tlog/guix") (interval "30s"))))
         (upstreams
          (list (quorate-upstream (url "https://ci.guix.gnu.org"))
                (quorate-upstream (url "https://bordeaux.guix.gnu.org"))
                (quorate-upstream (url "http://rebuilder.lan:8080")
                                  (bearer-token "s3cret"))))))))
