# services.quorate: quorate as a hardened systemd service on NixOS.
#
#   imports = [ ./path/to/quorate/nixos-module ];   # or the flake's nixosModules.default
#   services.quorate = {
#     enable = true;
#     settings = {
#       listen = "0.0.0.0:8080";
#       cache = [{
#         name = "nixos"; flavor = "nix"; quorum = 2;
#         builder = [
#           { name = "hydra"; keys = [ "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ]; }
#           { name = "home"; keys = [ "rebuilder-1:..." ]; }
#         ];
#         upstream = [ { url = "https://cache.nixos.org"; } { url = "https://rebuilder.lan"; } ];
#       }];
#     };
#     signingKeyFile = "/var/keys/quorate-1.sec";   # a path outside the store, read by systemd
#     database.createLocally = true;                 # PostgreSQL on this machine
#     openFirewall = true;
#   };
#
# A member of a replica set (README "Scale-out"): every replica has the same settings, one
# shared PostgreSQL in settings.database_url, NARs in one S3 bucket, and its own advertiseUrl:
#   services.quorate = {
#     settings.database_url = "postgres://quorate@db.lan/quorate";
#     narStore = {
#       url = "s3://quorate/nar-store"; endpoint = "https://s3.lan"; region = "garage";
#       accessKeyId = "GK..."; secretAccessKeyFile = "/var/keys/quorate-s3.secret";
#     };
#     replica = { advertiseUrl = "http://cache-1.lan:8080"; secretFile = "/var/keys/quorate-replica.secret"; };
#   };
#
# `settings` is quorate's TOML config (DESIGN §7, README "Configuration reference") written as
# Nix: every key is reachable, unknown keys are refused by quorate itself when the rendered file
# is checked at build time (`quorate check-config`, as attic's module does).
#
# Secrets never enter the world-readable Nix store: signing keys, the S3 secret key and the
# replica secret are given as paths on the target machine and handed to the unit with
# systemd's LoadCredential=. quorate does not
# expand environment variables in its config, so the rendered file cannot say
# `$CREDENTIALS_DIRECTORY/...`. It names the fixed path instead: for a system service systemd
# always places credentials in /run/credentials/<unit name>/, i.e.
# /run/credentials/quorate.service/<credential name>, readable by the service's (dynamic) user
# only. That keeps the whole config a build-time, checkable store file with no ExecStartPre
# rendering step.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib)
    mkOption
    mkEnableOption
    mkIf
    mkDefault
    types
    literalExpression
    ;

  cfg = config.services.quorate;

  # Where systemd puts this unit's LoadCredential= files (see the header).
  credentialsDir = "/run/credentials/quorate.service";
  # StateDirectory=quorate; with DynamicUser it is a symlink to /var/lib/private/quorate.
  stateDir = "/var/lib/quorate";
  # Database and role of database.createLocally: the role must equal the service's user name,
  # since quorate logs in over the local socket with peer authentication (no password).
  dbName = "quorate";
  localDatabaseUrl = "postgresql:///${dbName}?host=/run/postgresql&user=${dbName}";

  storePrefix = "${builtins.storeDir}/";
  inStore = p: lib.hasPrefix storePrefix (toString p);

  # A TOML value: what quorate's config can hold. null means "leave the key out".
  tomlValue =
    types.nullOr (
      types.oneOf [
        types.bool
        types.int
        types.float
        types.str
        types.path
        (types.attrsOf tomlValue)
        (types.listOf tomlValue)
      ]
    )
    // {
      description = "TOML value";
    };

  cacheModule = {
    freeformType = types.attrsOf tomlValue;
    options = {
      name = mkOption {
        type = types.strMatching "[A-Za-z0-9._-]+";
        description = "Cache name: recorded with every attestation and decision; keys `signingKeyFiles`.";
      };
      flavor = mkOption {
        type = types.enum [
          "nix"
          "guix"
        ];
        description = "Client protocol of this cache.";
      };
    };
  };

  settingsModule = {
    freeformType = types.attrsOf tomlValue;
    options = {
      listen = mkOption {
        type = types.str;
        default = "127.0.0.1:8080";
        example = "0.0.0.0:8080";
        description = "Address quorate binds (`openFirewall` opens its port).";
      };
      state_dir = mkOption {
        type = types.str;
        default = stateDir;
        description = "NAR store, generated keys and the SQLite database. The default is the unit's StateDirectory.";
      };
      database_url = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "postgres://quorate@db.lan/quorate";
        description = "null: SQLite in state_dir. Set by `database.createLocally` to the local socket.";
      };
      cache = mkOption {
        type = types.listOf (types.submodule cacheModule);
        # quorate's own default (`quorate serve` without --config): one Nix cache in front of
        # cache.nixos.org trusting hydra alone. A list you set replaces it whole.
        default = [
          {
            name = "nixos";
            flavor = "nix";
            quorum = 1;
            builder = [
              {
                name = "hydra";
                keys = [ "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ];
              }
            ];
            upstream = [ { url = "https://cache.nixos.org"; } ];
          }
        ];
        description = "The `[[cache]]` sections: builders, upstreams, quorum, on_dissent, mount, ...";
      };
    };
  };

  credentialName = cache: "signing-key-${cache}";
  s3SecretCredential = "s3-secret-access-key";
  replicaSecretCredential = "replica-secret";

  # [nar_store] from the narStore options (null: the section is left out, NARs stay in
  # state_dir as today). Unset options are left out (quorate's defaults).
  narStoreSection = lib.optionalAttrs (cfg.narStore.url != null) {
    nar_store = {
      inherit (cfg.narStore) url endpoint region;
      path_style = cfg.narStore.pathStyle;
      access_key_id = cfg.narStore.accessKeyId;
      secret_access_key_file =
        if cfg.narStore.secretAccessKeyFile != null then
          "${credentialsDir}/${s3SecretCredential}"
        else
          null;
    };
  };

  # [replica] from the replica options.
  replicaSection = lib.optionalAttrs (cfg.replica.advertiseUrl != null) {
    replica = {
      advertise_url = cfg.replica.advertiseUrl;
      secret_file = "${credentialsDir}/${replicaSecretCredential}";
    };
  };

  isPostgres = url: url != null && (lib.hasPrefix "postgres://" url || lib.hasPrefix "postgresql://" url);

  # cache name -> secret key path on the target machine.
  signingKeys =
    lib.optionalAttrs (cfg.signingKeyFile != null && cfg.settings.cache != [ ]) {
      ${(lib.head cfg.settings.cache).name} = cfg.signingKeyFile;
    }
    // cfg.signingKeyFiles;

  cacheNames = map (c: c.name) cfg.settings.cache;

  # Drops nulls at every depth, inside lists too: TOML has no null.
  dropNulls =
    v:
    if builtins.isAttrs v then
      lib.mapAttrs (_: dropNulls) (lib.filterAttrs (_: x: x != null) v)
    else if builtins.isList v then
      map dropNulls (builtins.filter (x: x != null) v)
    else
      v;

  # The config as written: each cache with a key in signingKeys reads it from its credential;
  # [nar_store] and [replica] from their options, secrets from their credentials.
  renderedSettings = dropNulls (
    cfg.settings
    // narStoreSection
    // replicaSection
    // {
      cache = map (
        c:
        c
        // lib.optionalAttrs (signingKeys ? ${c.name}) {
          signing_key_file = "${credentialsDir}/${credentialName c.name}";
        }
      ) cfg.settings.cache;
    }
  );

  configFile = (pkgs.formats.toml { }).generate "quorate.toml" renderedSettings;

  # quorate refuses the file it cannot load at build time, not at the next boot.
  checkedConfigFile =
    if cfg.checkConfig then
      pkgs.runCommand "quorate-checked.toml" { } ''
        ${cfg.package}/bin/quorate check-config --config ${configFile}
        cp ${configFile} $out
      ''
    else
      configFile;

  listenPort = lib.toInt (lib.last (lib.splitString ":" cfg.settings.listen));
  # Below 1024 the unit needs CAP_NET_BIND_SERVICE, which a private user namespace would void.
  lowPort = listenPort < 1024;

  secretAssertion = what: path: [
    {
      assertion = !(inStore path);
      message =
        "${what} is ${toString path}, a path in the Nix store, which is world-readable: a secret key must not be there. "
        + "Give the absolute path of the key on the target machine as a string (e.g. \"/var/keys/quorate-1.sec\"); systemd passes it to quorate with LoadCredential.";
    }
  ];
in
{
  options.services.quorate = {
    enable = mkEnableOption "quorate, a substitute cache proxy that serves a store path only when a quorum of independent builders agree";

    package = mkOption {
      type = types.package;
      default = pkgs.quorate or (pkgs.callPackage ./package.nix { });
      defaultText = literalExpression "pkgs.quorate or (pkgs.callPackage ./package.nix { })";
      description = "The quorate package (the flake's module sets its own build).";
    };

    settings = mkOption {
      type = types.submodule settingsModule;
      default = { };
      description = ''
        quorate's TOML configuration (README "Configuration reference") as Nix.
        Nested sections are attribute sets, `[[cache]]`, `[[cache.builder]]` and
        `[[cache.upstream]]` are lists of attribute sets. Relative paths would resolve against
        the Nix store: use absolute ones. Guix builder keys: the s-expression itself, or a Nix
        path to the `.pub` file (public keys may live in the store).
      '';
    };

    renderedSettings = mkOption {
      type = types.attrsOf types.anything;
      readOnly = true;
      internal = true;
      default = renderedSettings;
      description = "The settings exactly as rendered to quorate.toml (credential paths filled in, nulls dropped). For tests.";
    };

    configFile = mkOption {
      type = types.path;
      readOnly = true;
      default = checkedConfigFile;
      defaultText = lib.literalMD "`quorate.toml` rendered from `settings`, checked with `quorate check-config`";
      description = "The config file the service runs with.";
    };

    checkConfig = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Run `quorate check-config` on the rendered file at build time. Turn off only when the
        config names files the build sandbox cannot see (e.g. Guix `.pub` key files given as
        strings outside the store).
      '';
    };

    signingKeyFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/var/keys/quorate-1.sec";
      description = ''
        quorate's secret signing key for the one configured cache (with several caches use
        `signingKeyFiles`). An absolute path on the target machine, outside the Nix store; it
        reaches quorate through systemd's LoadCredential. null: quorate generates a key in
        state_dir/keys on first start and logs the public key.
      '';
    };

    signingKeyFiles = mkOption {
      type = types.attrsOf types.path;
      default = { };
      example = {
        nixos = "/var/keys/quorate-nix.sec";
        guix = "/var/keys/quorate-guix.sec";
      };
      description = "Secret signing key per cache name, passed like `signingKeyFile`.";
    };

    narStore = {
      url = mkOption {
        type = types.nullOr (types.strMatching "(s3|file)://.+");
        default = null;
        example = "s3://quorate/nar-store";
        description = ''
          Where NARs are kept (`[nar_store] url`): `s3://bucket/prefix` for an S3-compatible
          object store shared by a replica set, or `file:///path`. null: the local directory
          `state_dir/nars`, as a single quorate keeps them.
        '';
      };
      endpoint = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "http://127.0.0.1:3900";
        description = "S3 endpoint of a self-hosted store (Garage, MinIO, Ceph); null for AWS.";
      };
      region = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "garage";
        description = "S3 region to sign for (Garage: its `s3_region`).";
      };
      pathStyle = mkOption {
        type = types.nullOr types.bool;
        default = null;
        description = "Path-style addressing (`endpoint/bucket/key`); null: quorate's default (on when `endpoint` is set).";
      };
      accessKeyId = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "GK31c2f218a2e44f485b94239e";
        description = "S3 access key id (not a secret); null: quorate reads `AWS_ACCESS_KEY_ID`.";
      };
      secretAccessKeyFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/var/keys/quorate-s3.secret";
        description = ''
          A file holding the S3 secret access key: an absolute path on the target machine,
          outside the Nix store, passed with LoadCredential like the signing keys. null:
          quorate reads `AWS_SECRET_ACCESS_KEY`.
        '';
      };
    };

    replica = {
      advertiseUrl = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "http://cache-1.lan:8080";
        description = ''
          Makes this quorate a member of a replica set (`[replica] advertise_url`): how the
          other replicas reach this one (its listen address as they see it). The set shares
          settings.database_url (PostgreSQL) and narStore.
        '';
      };
      secretFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/var/keys/quorate-replica.secret";
        description = ''
          The replica set's shared secret (the same file content on every replica), which
          authenticates the replicas' internal route: a path on the target machine, outside
          the Nix store, passed with LoadCredential.
        '';
      };
    };

    database.createLocally = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Run PostgreSQL on this machine with a `quorate` database owned by a `quorate` role, and
        point database_url at its Unix socket (peer authentication, no password). Without it,
        quorate uses SQLite in state_dir, or the database_url you set.
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the TCP port of `settings.listen` in the firewall.";
    };
  };

  config = mkIf cfg.enable {
    assertions =
      lib.concatLists (
        lib.mapAttrsToList (
          cache: path: secretAssertion "services.quorate.signingKeyFiles.${cache}" path
        ) cfg.signingKeyFiles
      )
      ++ lib.optionals (cfg.signingKeyFile != null) (
        secretAssertion "services.quorate.signingKeyFile" cfg.signingKeyFile
      )
      ++ lib.optionals (cfg.narStore.secretAccessKeyFile != null) (
        secretAssertion "services.quorate.narStore.secretAccessKeyFile" cfg.narStore.secretAccessKeyFile
      )
      ++ lib.optionals (cfg.replica.secretFile != null) (
        secretAssertion "services.quorate.replica.secretFile" cfg.replica.secretFile
      )
      ++ lib.concatMap (
        c:
        lib.optionals (c ? signing_key_file && c.signing_key_file != null) (
          secretAssertion "services.quorate.settings.cache (${c.name}).signing_key_file" c.signing_key_file
          ++ [
            {
              # Rendering the settings copies a Nix path value into the store.
              assertion = !builtins.isPath c.signing_key_file;
              message = "services.quorate.settings.cache (${c.name}).signing_key_file is a Nix path, which rendering the config would copy into the world-readable store: use services.quorate.signingKeyFiles.${c.name} instead.";
            }
          ]
        )
      ) cfg.settings.cache
      ++ [
        {
          assertion = cfg.signingKeyFile == null || lib.length cfg.settings.cache == 1;
          message = "services.quorate.signingKeyFile is for a single cache; with ${toString (lib.length cfg.settings.cache)} caches, give each its key in services.quorate.signingKeyFiles.<cache name>.";
        }
        {
          assertion = lib.all (name: lib.elem name cacheNames) (lib.attrNames cfg.signingKeyFiles);
          message = "services.quorate.signingKeyFiles names ${
            lib.concatStringsSep ", " (
              lib.filter (n: !(lib.elem n cacheNames)) (lib.attrNames cfg.signingKeyFiles)
            )
          }, which is not a cache in services.quorate.settings.cache (${lib.concatStringsSep ", " cacheNames}).";
        }
        {
          assertion = (cfg.replica.advertiseUrl == null) == (cfg.replica.secretFile == null);
          message = "services.quorate.replica needs both advertiseUrl and secretFile (a replica set's members authenticate each other with the shared secret).";
        }
        {
          assertion = cfg.replica.advertiseUrl == null || isPostgres cfg.settings.database_url;
          message = "services.quorate.replica: a replica set shares one PostgreSQL database; set services.quorate.settings.database_url to a postgres:// URL (quorate refuses SQLite for a replica set).";
        }
        {
          assertion = !(cfg.settings ? nar_store && cfg.narStore.url != null);
          message = "services.quorate: [nar_store] is set both in settings.nar_store and in narStore; use narStore (it keeps the secret key out of the store).";
        }
        {
          assertion = !(cfg.settings ? replica && cfg.replica.advertiseUrl != null);
          message = "services.quorate: [replica] is set both in settings.replica and in replica; use replica (it keeps the secret out of the store).";
        }
        {
          assertion = cfg.narStore.url != null || lib.all (v: v == null) (lib.attrValues (removeAttrs cfg.narStore [ "url" ]));
          message = "services.quorate.narStore: endpoint, region, pathStyle and the credentials need narStore.url.";
        }
        {
          assertion = !cfg.database.createLocally || cfg.settings.database_url == localDatabaseUrl;
          message = "services.quorate.database.createLocally sets database_url to the local socket (${localDatabaseUrl}); remove your own services.quorate.settings.database_url or turn createLocally off.";
        }
      ];

    warnings = lib.concatMap (
      c:
      map (
        u: "services.quorate: upstream ${u.url or "?"} of cache ${c.name} has a bearer_token in settings; it is written into the world-readable Nix store."
      ) (lib.filter (u: (u.bearer_token or null) != null) (c.upstream or [ ]))
    ) cfg.settings.cache;

    services.quorate.settings.database_url = mkIf cfg.database.createLocally (mkDefault localDatabaseUrl);

    services.postgresql = mkIf cfg.database.createLocally {
      enable = true;
      ensureDatabases = [ dbName ];
      ensureUsers = [
        {
          name = dbName;
          ensureDBOwnership = true;
        }
      ];
    };

    networking.firewall.allowedTCPPorts = mkIf cfg.openFirewall [ listenPort ];

    # quorate keygen / check-config for the operator.
    environment.systemPackages = [ cfg.package ];

    systemd.services.quorate = {
      description = "quorate substitute cache proxy (quorum of independent builders)";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      # postgresql.service is the server on every NixOS release; newer ones create the ensured
      # database and role in a separate step and reach postgresql.target after it. Ordering
      # after a unit that does not exist is a no-op, so both are listed.
      after = [
        "network-online.target"
      ]
      ++ lib.optionals cfg.database.createLocally [
        "postgresql.service"
        "postgresql.target"
      ];
      requires = lib.optionals cfg.database.createLocally [ "postgresql.service" ];

      serviceConfig = {
        ExecStart = "${cfg.package}/bin/quorate serve --config ${cfg.configFile}";
        Restart = "on-failure";
        RestartSec = 5;

        DynamicUser = true;
        User = "quorate";
        Group = "quorate";
        StateDirectory = "quorate";
        StateDirectoryMode = "0700";
        WorkingDirectory = stateDir;
        LoadCredential =
          lib.mapAttrsToList (cache: path: "${credentialName cache}:${toString path}") signingKeys
          ++ lib.optional (
            cfg.narStore.url != null && cfg.narStore.secretAccessKeyFile != null
          ) "${s3SecretCredential}:${toString cfg.narStore.secretAccessKeyFile}"
          ++ lib.optional (
            cfg.replica.advertiseUrl != null && cfg.replica.secretFile != null
          ) "${replicaSecretCredential}:${toString cfg.replica.secretFile}";
        # A state_dir outside the StateDirectory must be made writable explicitly.
        ReadWritePaths = lib.optionals (
          cfg.settings.state_dir != stateDir && !(lib.hasPrefix "${stateDir}/" cfg.settings.state_dir)
        ) [ cfg.settings.state_dir ];

        # Hardening, as attic's and harmonia's modules do. quorate only needs the network,
        # its state directory and its credentials.
        CapabilityBoundingSet = if lowPort then [ "CAP_NET_BIND_SERVICE" ] else [ "" ];
        AmbientCapabilities = lib.optionals lowPort [ "CAP_NET_BIND_SERVICE" ];
        DeviceAllow = "";
        DevicePolicy = "closed";
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        NoNewPrivileges = true;
        PrivateDevices = true;
        PrivateTmp = true;
        PrivateUsers = !lowPort;
        ProcSubset = "pid";
        ProtectClock = true;
        ProtectControlGroups = true;
        ProtectHome = true;
        ProtectHostname = true;
        ProtectKernelLogs = true;
        ProtectKernelModules = true;
        ProtectKernelTunables = true;
        ProtectProc = "invisible";
        ProtectSystem = "strict";
        RemoveIPC = true;
        RestrictAddressFamilies = [
          "AF_INET"
          "AF_INET6"
          "AF_UNIX"
        ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [
          "@system-service"
          "~@privileged"
          "~@resources"
        ];
        UMask = "0077";
      };
    };
  };
}
