//! The deployment files (DESIGN §14), each checked by the tool that reads it, and every config
//! they write checked by `quorate check-config` itself.
//!
//! - `nixos-module/`: evaluated by Nix 2.8 (Debian's nix-bin) with nixpkgs `lib`, vendored in
//!   `nixos-module/tests/nixpkgs-lib`, through `nixos-module/tests/eval.nix` (the rest of
//!   NixOS declared by `stub.nix`). The systemd unit is read as NixOS would render it; the
//!   settings are rendered to TOML here (nixpkgs' `formats.toml` needs nixpkgs) and checked.
//! - `guix-service/`: read by plain Guile 3.0 with Guix's G-expression syntax; its records and
//!   record->TOML mappings run with a stand-in for `define-record-type*`
//!   (`guix-service/tests/harness.scm`); the serializer (`quorate/serialize.scm`) is loaded as
//!   it is.
//! - `docker-compose.yml`: validated by Debian's docker-compose; its quorate config is checked;
//!   the container's readiness probe is run against a real quorate.
//!
//! A missing tool is a failure that names its Debian package, never a skip: `scripts/test.sh`
//! installs nix-bin, guile-3.0 and docker-compose.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{scratch_dir, Backend, CacheSpec, Quorate};
use serde_json::{json, Value};

const NIXOS_KEY: &str = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";
const GUIX_CI_KEY: &str = "(public-key (ecc (curve Ed25519) (q #8D156F295D24B0D9A86FA5741A840FF2D24F60F7B6C4134814AD55625971B394#)))";
const CREDENTIALS: &str = "/run/credentials/quorate.service";

// ------------------------------------------------------------------------------ support

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd` with no stdin; a program that cannot be started fails the test naming the
/// Debian package that provides it.
fn run(cmd: &mut Command, debian_package: &str) -> Output {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| {
        panic!(
            "cannot run `{program}` ({e}): install the Debian package {debian_package} \
                 (scripts/test.sh does)"
        )
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn explain(what: &str, out: &Output) -> String {
    format!(
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// `quorate check-config --config <dir>/quorate.toml` with `toml` written there.
fn check_config(dir: &Path, toml: &str) -> Output {
    let file = dir.join("quorate.toml");
    std::fs::write(&file, toml).expect("writing quorate.toml");
    run(
        Command::new(env!("CARGO_BIN_EXE_quorate"))
            .arg("check-config")
            .arg("--config")
            .arg(&file),
        "(none: quorate itself)",
    )
}

/// Asserts that quorate accepts `toml`; returns check-config's summary line.
fn assert_quorate_accepts(dir: &Path, toml: &str) -> String {
    let out = check_config(dir, toml);
    assert!(
        out.status.success(),
        "{}\nconfig:\n{toml}",
        explain("quorate check-config refused the rendered config", &out)
    );
    text(&out.stdout)
}

// ------------------------------------------------------------------------------ NixOS module

/// `nix-instantiate` in the checkout, independent of this machine's Nix set-up: an empty
/// configuration (no daemon, no build users), no NIX_PATH, and the `dummy://` store, which
/// computes store paths without a /nix store on disk (none is ever built here).
fn nix_instantiate(conf_dir: &Path) -> Command {
    let mut cmd = Command::new("nix-instantiate");
    cmd.current_dir(repo())
        .env("NIX_CONF_DIR", conf_dir)
        .env("NIX_USER_CONF_FILES", conf_dir.join("none.conf"))
        .env("NIX_PATH", "")
        .args(["--store", "dummy://", "--option", "build-users-group", ""]);
    cmd
}

/// Evaluates the module for `configuration` (a Nix expression) with `eval.nix`; `Err` holds
/// Nix's error output (failed assertions among them).
fn eval_nixos(configuration: &str) -> Result<Value, String> {
    let conf_dir = scratch_dir("nix-conf");
    let out = run(
        nix_instantiate(conf_dir.path())
            .args(["--eval", "--strict", "--json", "--readonly-mode"])
            .arg("nixos-module/tests/eval.nix")
            .args(["--arg", "configuration", configuration]),
        "nix-bin",
    );
    if !out.status.success() {
        return Err(text(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout).expect("nix-instantiate --json printed JSON"))
}

fn eval_nixos_ok(configuration: &str) -> Value {
    eval_nixos(configuration)
        .unwrap_or_else(|e| panic!("the NixOS module did not evaluate for {configuration}:\n{e}"))
}

/// The module's rendered settings as TOML, the way nixpkgs' formats.toml writes them.
fn settings_toml(evaluated: &Value) -> String {
    toml::to_string(&json_to_toml(&evaluated["settings"])).expect("rendering TOML")
}

fn json_to_toml(value: &Value) -> toml::Value {
    match value {
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64().expect("a JSON number")),
        },
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(items) => toml::Value::Array(items.iter().map(json_to_toml).collect()),
        Value::Object(map) => toml::Value::Table(
            map.iter()
                .map(|(k, v)| (k.clone(), json_to_toml(v)))
                .collect(),
        ),
        Value::Null => panic!("the module rendered a null, which TOML cannot hold"),
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("expected a list, got {value}"))
        .iter()
        .map(|v| v.as_str().expect("a string").to_owned())
        .collect()
}

#[test]
fn nixos_module_runs_quorate_as_a_hardened_dynamic_user_service_with_its_checked_config() {
    let evaluated = eval_nixos_ok("{ services.quorate.enable = true; }");
    let unit = &evaluated["unit"];
    let service = &unit["serviceConfig"];

    // ExecStart runs the package's quorate on the config that went through check-config.
    let exec_start = service["ExecStart"].as_str().expect("ExecStart");
    let config_file = evaluated["configFile"].as_str().expect("configFile");
    assert!(
        config_file.starts_with("/nix/store/") && config_file.ends_with("-quorate-checked.toml"),
        "{config_file}"
    );
    let (binary, args) = exec_start.split_once(' ').expect("ExecStart has arguments");
    assert!(
        binary.starts_with("/nix/store/") && binary.ends_with("-quorate-0.1.0/bin/quorate"),
        "{exec_start}"
    );
    assert_eq!(args, format!("serve --config {config_file}"));

    assert_eq!(service["DynamicUser"], true);
    assert_eq!(service["StateDirectory"], "quorate");
    assert_eq!(service["StateDirectoryMode"], "0700");
    for (key, want) in [
        ("ProtectSystem", json!("strict")),
        ("PrivateTmp", json!(true)),
        ("NoNewPrivileges", json!(true)),
        ("ProtectHome", json!(true)),
        ("PrivateDevices", json!(true)),
        ("PrivateUsers", json!(true)),
        ("ProtectKernelTunables", json!(true)),
        ("ProtectKernelModules", json!(true)),
        ("ProtectKernelLogs", json!(true)),
        ("ProtectControlGroups", json!(true)),
        ("ProtectClock", json!(true)),
        ("LockPersonality", json!(true)),
        ("MemoryDenyWriteExecute", json!(true)),
        ("RestrictNamespaces", json!(true)),
        ("RestrictSUIDSGID", json!(true)),
        ("RestrictRealtime", json!(true)),
        ("UMask", json!("0077")),
        ("CapabilityBoundingSet", json!([""])),
        ("AmbientCapabilities", json!([])),
        (
            "RestrictAddressFamilies",
            json!(["AF_INET", "AF_INET6", "AF_UNIX"]),
        ),
        ("SystemCallArchitectures", json!("native")),
    ] {
        assert_eq!(service[key], want, "serviceConfig.{key}");
    }
    assert_eq!(strings(&service["SystemCallFilter"])[0], "@system-service");
    // No key configured: quorate generates one in its state directory; nothing to pass.
    assert_eq!(service["LoadCredential"], json!([]));
    assert_eq!(strings(&unit["wantedBy"]), ["multi-user.target"]);
    assert!(!strings(&unit["after"])
        .iter()
        .any(|u| u.contains("postgresql")));

    // The default settings are quorate's own default: a config it accepts.
    let dir = scratch_dir("nixos-default");
    let summary = assert_quorate_accepts(dir.path(), &settings_toml(&evaluated));
    assert!(
        summary.contains("1 cache(s)") && summary.contains("sqlite"),
        "{summary}"
    );
    assert_eq!(evaluated["settings"]["state_dir"], "/var/lib/quorate");
}

#[test]
fn nixos_module_settings_reach_every_config_key_and_render_to_a_config_quorate_accepts() {
    let configuration = format!(
        r#"{{
          services.quorate = {{
            enable = true;
            signingKeyFiles = {{ nixos = "/var/keys/quorate-nix.sec"; guix = "/var/keys/quorate-guix.sec"; }};
            settings = {{
              listen = "0.0.0.0:8080";
              state_dir = "/var/lib/quorate";
              database_url = "postgres://quorate@db.lan/quorate";
              max_cache_size = "50GiB";
              upstream_timeout = "15s";
              cache = [
                {{
                  name = "nixos"; flavor = "nix"; mount = "/nix"; store_dir = "/nix/store";
                  signing_key_name = "quorate-lan-1"; priority = 30; quorum = 2;
                  on_dissent = "majority"; required_builders = [ "hydra" ];
                  builder = [
                    {{ name = "hydra"; keys = [ "{NIXOS_KEY}" ]; }}
                    {{ name = "home"; keys = [ "home-1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" ]; }}
                  ];
                  upstream = [
                    {{ url = "https://cache.nixos.org"; priority = 10; }}
                    {{ url = "https://home.lan"; bearer_token = "t0ken"; }}
                  ];
                }}
                {{
                  name = "guix"; flavor = "guix"; mount = "/guix"; quorum = 1;
                  builder = [ {{ name = "ci"; keys = [ "{GUIX_CI_KEY}" ]; }} ];
                  upstream = [ {{ url = "https://ci.guix.gnu.org"; }} ];
                }}
              ];
            }};
          }};
        }}"#
    );
    let evaluated = eval_nixos_ok(&configuration);
    let toml_text = settings_toml(&evaluated);
    let dir = scratch_dir("nixos-settings");
    let summary = assert_quorate_accepts(dir.path(), &toml_text);
    assert!(
        summary.contains("2 cache(s)") && summary.contains("postgres"),
        "{summary}"
    );

    // What was set is what quorate reads, key for key.
    let rendered: toml::Table = toml::from_str(&toml_text).expect("the rendered TOML parses");
    assert_eq!(rendered["listen"].as_str(), Some("0.0.0.0:8080"));
    assert_eq!(rendered["max_cache_size"].as_str(), Some("50GiB"));
    assert_eq!(rendered["upstream_timeout"].as_str(), Some("15s"));
    let nix = &rendered["cache"][0];
    assert_eq!(nix["on_dissent"].as_str(), Some("majority"));
    assert_eq!(nix["signing_key_name"].as_str(), Some("quorate-lan-1"));
    assert_eq!(nix["upstream"][1]["bearer_token"].as_str(), Some("t0ken"));
    assert_eq!(
        rendered["cache"][1]["builder"][0]["keys"][0].as_str(),
        Some(GUIX_CI_KEY)
    );

    // Each cache reads its key from its own credential; the unit loads both.
    assert_eq!(
        nix["signing_key_file"].as_str(),
        Some(format!("{CREDENTIALS}/signing-key-nixos").as_str())
    );
    assert_eq!(
        rendered["cache"][1]["signing_key_file"].as_str(),
        Some(format!("{CREDENTIALS}/signing-key-guix").as_str())
    );
    let mut credentials = strings(&evaluated["unit"]["serviceConfig"]["LoadCredential"]);
    credentials.sort();
    assert_eq!(
        credentials,
        [
            "signing-key-guix:/var/keys/quorate-guix.sec",
            "signing-key-nixos:/var/keys/quorate-nix.sec"
        ]
    );
    // A bearer token in settings lands in the store: the operator is told.
    let warnings = strings(&evaluated["warnings"]);
    assert!(
        warnings.len() == 1 && warnings[0].contains("https://home.lan"),
        "{warnings:?}"
    );
}

#[test]
fn nixos_module_hands_the_signing_key_to_quorate_as_a_credential_never_naming_it_in_the_config() {
    let evaluated = eval_nixos_ok(
        r#"{ services.quorate = { enable = true; signingKeyFile = "/var/keys/quorate-1.sec"; }; }"#,
    );
    assert_eq!(
        strings(&evaluated["unit"]["serviceConfig"]["LoadCredential"]),
        ["signing-key-nixos:/var/keys/quorate-1.sec"]
    );
    let toml_text = settings_toml(&evaluated);
    assert!(
        toml_text.contains(&format!(
            "signing_key_file = \"{CREDENTIALS}/signing-key-nixos\""
        )),
        "{toml_text}"
    );
    assert!(!toml_text.contains("/var/keys"), "{toml_text}");
    let dir = scratch_dir("nixos-key");
    assert_quorate_accepts(dir.path(), &toml_text);
}

#[test]
fn nixos_module_refuses_to_evaluate_with_a_signing_key_in_the_nix_store() {
    let key = "/nix/store/00000000000000000000000000000000-quorate-key.sec";
    for (configuration, option) in [
        (
            format!(r#"{{ services.quorate = {{ enable = true; signingKeyFile = "{key}"; }}; }}"#),
            "services.quorate.signingKeyFile",
        ),
        (
            format!(
                r#"{{ services.quorate = {{ enable = true; signingKeyFiles.nixos = "{key}"; }}; }}"#
            ),
            "services.quorate.signingKeyFiles.nixos",
        ),
        (
            format!(
                r#"{{ services.quorate = {{ enable = true; settings.cache = [ {{
                     name = "nixos"; flavor = "nix"; signing_key_file = "{key}";
                     builder = [ {{ name = "hydra"; keys = [ "{NIXOS_KEY}" ]; }} ];
                     upstream = [ {{ url = "https://cache.nixos.org"; }} ]; }} ]; }}; }}"#
            ),
            "services.quorate.settings.cache (nixos).signing_key_file",
        ),
    ] {
        let err = match eval_nixos(&configuration) {
            Ok(v) => panic!("a store path as {option} evaluated: {v}"),
            Err(e) => e,
        };
        assert!(
            err.contains("Failed assertions")
                && err.contains(&format!("{option} is {key}, a path in the Nix store")),
            "{option}: {err}"
        );
    }
}

#[test]
fn nixos_module_local_database_runs_postgresql_and_starts_quorate_after_it() {
    let evaluated =
        eval_nixos_ok("{ services.quorate = { enable = true; database.createLocally = true; }; }");
    let postgresql = &evaluated["postgresql"];
    assert_eq!(postgresql["enable"], true);
    assert_eq!(postgresql["ensureDatabases"], json!(["quorate"]));
    assert_eq!(
        postgresql["ensureUsers"],
        json!([{ "name": "quorate", "ensureDBOwnership": true }])
    );
    let unit = &evaluated["unit"];
    assert!(strings(&unit["after"]).contains(&"postgresql.service".to_owned()));
    assert!(strings(&unit["requires"]).contains(&"postgresql.service".to_owned()));
    // Peer authentication over the local socket: the role is the service's user, no password.
    assert_eq!(unit["serviceConfig"]["User"], "quorate");
    assert_eq!(
        evaluated["settings"]["database_url"],
        "postgresql:///quorate?host=/run/postgresql&user=quorate"
    );
    let dir = scratch_dir("nixos-postgres");
    let summary = assert_quorate_accepts(dir.path(), &settings_toml(&evaluated));
    assert!(summary.contains("database postgres"), "{summary}");

    // Without it, no PostgreSQL and no ordering.
    let plain = eval_nixos_ok("{ services.quorate.enable = true; }");
    assert_eq!(plain["postgresql"], json!({}));
    assert_eq!(plain["unit"]["requires"], json!([]));
}

#[test]
fn nixos_module_opens_the_listen_port_in_the_firewall_only_when_asked() {
    let open = eval_nixos_ok(
        r#"{ services.quorate = { enable = true; openFirewall = true; settings.listen = "0.0.0.0:8443"; }; }"#,
    );
    assert_eq!(open["firewall"], json!([8443]));
    let closed = eval_nixos_ok(
        r#"{ services.quorate = { enable = true; settings.listen = "0.0.0.0:8443"; }; }"#,
    );
    assert_eq!(closed["firewall"], json!([]));
}

#[test]
fn nixos_module_grants_only_the_bind_capability_for_a_port_below_1024() {
    let evaluated = eval_nixos_ok(
        r#"{ services.quorate = { enable = true; settings.listen = "0.0.0.0:80"; }; }"#,
    );
    let service = &evaluated["unit"]["serviceConfig"];
    assert_eq!(
        service["CapabilityBoundingSet"],
        json!(["CAP_NET_BIND_SERVICE"])
    );
    assert_eq!(
        service["AmbientCapabilities"],
        json!(["CAP_NET_BIND_SERVICE"])
    );
    // A capability inside a private user namespace would not reach the host's network.
    assert_eq!(service["PrivateUsers"], false);
}

#[test]
fn nixos_module_disabled_defines_no_service() {
    let evaluated = eval_nixos_ok("{ }");
    assert_eq!(evaluated["unit"], Value::Null);
    assert_eq!(evaluated["firewall"], json!([]));
}

#[test]
fn flake_and_package_expressions_parse_and_the_package_builds_this_checkout() {
    let conf_dir = scratch_dir("nix-conf");
    for file in [
        "flake.nix",
        "nixos-module/package.nix",
        "nixos-module/default.nix",
    ] {
        let out = run(
            nix_instantiate(conf_dir.path()).args(["--parse", file]),
            "nix-bin",
        );
        assert!(out.status.success(), "{}", explain(file, &out));
    }
    // package.nix with a rustPlatform that hands back its arguments: what it would build.
    let out = run(
        nix_instantiate(conf_dir.path())
            .args(["--eval", "--strict", "--json", "--readonly-mode", "-E"])
            .arg(
                r#"let
                     lib = import ./nixos-module/tests/nixpkgs-lib/lib;
                     p = import ./nixos-module/package.nix { inherit lib; rustPlatform.buildRustPackage = a: a; };
                   in { inherit (p) pname version cargoBuildFlags; lock = builtins.pathExists p.cargoLock.lockFile; src = "${p.src}"; }"#,
            ),
        "nix-bin",
    );
    assert!(out.status.success(), "{}", explain("package.nix", &out));
    let package: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(package["pname"], "quorate");
    assert_eq!(package["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(package["lock"], true);
    assert_eq!(package["cargoBuildFlags"], json!(["--package", "quorate"]));
}

// ------------------------------------------------------------------------------ Guix service

fn guile(args: &[&str]) -> Output {
    run(
        Command::new("guile")
            .current_dir(repo())
            .env("GUILE_AUTO_COMPILE", "0")
            .args(["--no-auto-compile", "-L", "guix-service"])
            .args(args),
        "guile-3.0",
    )
}

/// The TOML the Guix service writes for the `quorate-configuration` in `config_file`.
fn guix_render(config_file: &Path) -> Output {
    guile(&[
        "guix-service/tests/harness.scm",
        "render",
        "guix-service/quorate.scm",
        config_file.to_str().expect("UTF-8 path"),
    ])
}

fn guix_render_ok(config_file: &Path) -> String {
    let out = guix_render(config_file);
    assert!(
        out.status.success(),
        "{}",
        explain("the Guix service did not render", &out)
    );
    text(&out.stdout)
}

#[test]
fn guix_service_file_parses_and_defines_everything_it_exports() {
    let out = guile(&[
        "guix-service/tests/harness.scm",
        "forms",
        "guix-service/quorate.scm",
    ]);
    assert!(
        out.status.success(),
        "{}",
        explain("reading quorate.scm", &out)
    );
    let facts = text(&out.stdout);
    let defines: Vec<&str> = facts
        .lines()
        .filter_map(|l| l.strip_prefix("defines "))
        .collect();
    for name in [
        "quorate-service-type",
        "quorate-configuration",
        "quorate-cache",
        "quorate-builder",
        "quorate-upstream",
        "quorate-shepherd-service",
        "quorate-activation",
        "%quorate-accounts",
        "quorate-configuration-file",
    ] {
        assert!(defines.contains(&name), "{name} is not defined:\n{facts}");
    }
    assert!(!facts.contains("missing-export"), "{facts}");
}

#[test]
fn guix_service_renders_a_nix_and_a_guix_cache_that_quorate_accepts() {
    let dir = scratch_dir("guix-sample");
    // The sample's Guix rebuilder names its key as a .pub file beside the config.
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_quorate"))
            .args(["keygen", "--flavor", "guix", "--name", "home", "--out"])
            .arg(dir.path().join("home-rebuilder")),
        "(none: quorate itself)",
    );
    assert!(out.status.success(), "{}", explain("quorate keygen", &out));

    let toml_text = guix_render_ok(&repo().join("guix-service/tests/sample-configuration.scm"));
    let summary = assert_quorate_accepts(dir.path(), &toml_text);
    assert!(
        summary.contains("2 cache(s)") && summary.contains("postgres"),
        "{summary}"
    );

    let rendered: toml::Table = toml::from_str(&toml_text).expect("the rendered TOML parses");
    let caches = rendered["cache"].as_array().expect("[[cache]]");
    assert_eq!(caches[0]["flavor"].as_str(), Some("nix"));
    assert_eq!(caches[1]["flavor"].as_str(), Some("guix"));
    assert_eq!(caches[1]["on_dissent"].as_str(), Some("majority"));
    assert_eq!(caches[1]["quorum"].as_integer(), Some(2));
    assert_eq!(caches[1]["builder"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        caches[1]["builder"][0]["keys"][0].as_str(),
        Some(GUIX_CI_KEY)
    );
    assert_eq!(
        caches[1]["upstream"][2]["bearer_token"].as_str(),
        Some("s3cret")
    );
    // Federation: a weight, a revoked key, the block list, a followed peer.
    assert_eq!(caches[1]["builder"][1]["weight"].as_integer(), Some(2));
    assert_eq!(
        caches[1]["builder"][2]["revoked"][0]["since"].as_str(),
        Some("2026-11-01T00:00:00Z")
    );
    assert_eq!(caches[1]["blocked"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        caches[1]["blocked"][1]["reason"].as_str(),
        Some("a bad build")
    );
    assert_eq!(
        caches[1]["peer"][0]["url"].as_str(),
        Some("https://peer.lan/tlog/guix")
    );
    assert_eq!(caches[1]["nar_compression"].as_str(), Some("zstd"));
}

#[test]
fn guix_service_default_serves_what_both_guix_build_farms_agree_on() {
    let dir = scratch_dir("guix-default");
    let config = dir.path().join("default.scm");
    std::fs::write(&config, "(quorate-configuration (package \"quorate\"))\n")
        .expect("writing default.scm");
    let toml_text = guix_render_ok(&config);
    let summary = assert_quorate_accepts(dir.path(), &toml_text);
    assert!(
        summary.contains("1 cache(s)") && summary.contains("sqlite"),
        "{summary}"
    );

    let rendered: toml::Table = toml::from_str(&toml_text).expect("the rendered TOML parses");
    let cache = &rendered["cache"][0];
    assert_eq!(cache["flavor"].as_str(), Some("guix"));
    assert_eq!(cache["quorum"].as_integer(), Some(2));
    assert_eq!(cache["on_dissent"].as_str(), Some("refuse"));
    let urls: Vec<&str> = cache["upstream"]
        .as_array()
        .expect("[[cache.upstream]]")
        .iter()
        .filter_map(|u| u["url"].as_str())
        .collect();
    assert_eq!(
        urls,
        ["https://ci.guix.gnu.org", "https://bordeaux.guix.gnu.org"]
    );
    assert_eq!(rendered["state_dir"].as_str(), Some("/var/lib/quorate"));
}

#[test]
fn guix_service_refuses_a_signing_key_in_the_store() {
    let dir = scratch_dir("guix-store-key");
    let config = dir.path().join("store-key.scm");
    std::fs::write(
        &config,
        r#"(quorate-configuration
             (package "quorate")
             (caches (list (quorate-cache
                            (name "guix")
                            (signing-key-file "/gnu/store/00000000000000000000000000000000-key.sec")
                            (builders (list (quorate-builder (name "ci") (keys '("k")))))
                            (upstreams (list (quorate-upstream (url "https://ci.guix.gnu.org"))))))))"#,
    )
    .expect("writing store-key.scm");
    let out = guix_render(&config);
    assert!(
        !out.status.success(),
        "{}",
        explain("rendered anyway", &out)
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cache guix: signing-key-file is /gnu/store/")
            && stderr.contains("a secret key must not be there"),
        "{stderr}"
    );
}

#[test]
fn guix_serializer_strings_read_back_unchanged_from_its_toml() {
    let dir = scratch_dir("guix-strings");
    // Quotes, backslashes, control characters, a newline (as in a .pub file) and non-ASCII.
    let tricky = "(public-key \"q\" \\ #AB#)\n\ttab\u{1} bell\u{7f} é ✓";
    let input = dir.path().join("value");
    std::fs::write(&input, tricky).expect("writing the value");
    let program = format!(
        r#"(use-modules (quorate serialize) (ice-9 textual-ports))
           (define value (call-with-input-file "{}" get-string-all #:encoding "UTF-8"))
           (set-port-encoding! (current-output-port) "UTF-8")
           (display (quorate-toml-string `(("key" . ,value) ("list" . ("a" ,value)) ("n" . 7))))"#,
        input.display()
    );
    let out = guile(&["-c", &program]);
    assert!(out.status.success(), "{}", explain("serializing", &out));
    let rendered: toml::Table =
        toml::from_str(&text(&out.stdout)).expect("the serializer's TOML parses");
    assert_eq!(rendered["key"].as_str(), Some(tricky));
    assert_eq!(rendered["list"][1].as_str(), Some(tricky));
    assert_eq!(rendered["n"].as_integer(), Some(7));
}

#[test]
fn guix_serializer_leaves_file_like_values_in_place_for_guix_to_lower() {
    // A (local-file "builder.pub") is no string: it must reach mixed-text-file as itself,
    // quoted where its store file name will be.
    let program = r#"(use-modules (quorate serialize) (srfi srfi-9))
       (define-record-type <file-like> (file-like name) file-like? (name file-like-name))
       (define pub (file-like "builder.pub"))
       (define fragments (quorate-toml-fragments `(("keys" . (,pub)))))
       (write (map (lambda (f) (if (string? f) f (list 'object (file-like-name f)))) fragments))
       (newline)
       (write (false-if-exception (quorate-toml-string `(("keys" . (,pub))))))"#;
    let out = guile(&["-c", program]);
    assert!(out.status.success(), "{}", explain("serializing", &out));
    let expected = r#"("keys" " = " "[" "\"" (object "builder.pub") "\"" "]" "\n")"#;
    assert_eq!(text(&out.stdout), format!("{expected}\n#f"));
}

// ------------------------------------------------------------------------------ docker-compose

fn docker_compose(args: &[&str]) -> Output {
    run(
        Command::new("docker-compose")
            .current_dir(repo())
            .args(["--file", "docker-compose.yml"])
            .args(args),
        "docker-compose",
    )
}

fn compose_ok(args: &[&str]) -> String {
    let out = docker_compose(args);
    assert!(
        out.status.success(),
        "{}",
        explain("docker-compose refused docker-compose.yml", &out)
    );
    text(&out.stdout)
}

/// `docker-compose config` (every profile), as JSON: docker-compose normalizes the file
/// (anchors merged, variables substituted, paths made absolute) and prints YAML, which the
/// Python YAML module docker-compose itself runs on turns into JSON.
fn compose_json() -> Value {
    let yaml = compose_ok(&["config"]);
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}): install docker-compose (it brings python3-yaml)")
        });
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("python3's stdin")
        .write_all(yaml.as_bytes())
        .expect("writing to python3");
    let out = child.wait_with_output().expect("waiting for python3");
    assert!(out.status.success(), "{}", explain("YAML to JSON", &out));
    serde_json::from_slice(&out.stdout).expect("python3 printed JSON")
}

/// The names of the services in profile `profile` (`None`: the services without a profile,
/// which `docker compose up` starts).
fn compose_services(compose: &Value, profile: Option<&str>) -> Vec<String> {
    let mut names: Vec<String> = compose["services"]
        .as_object()
        .expect("services")
        .iter()
        .filter(|(_, s)| {
            let profiles = s["profiles"].as_array().cloned().unwrap_or_default();
            match profile {
                None => profiles.is_empty(),
                Some(p) => profiles.iter().any(|x| x == p),
            }
        })
        .map(|(name, _)| name.clone())
        .collect();
    names.sort();
    names
}

#[test]
fn compose_file_is_valid_and_runs_quorate_after_a_healthy_postgres_with_state_on_volumes() {
    let normalized = compose_ok(&["config"]);
    // `docker compose up` (no profile) runs these two; the replica set is opt-in.
    let compose = compose_json();
    assert_eq!(compose_services(&compose, None), ["postgres", "quorate"]);
    let volumes = compose_ok(&["config", "--volumes"]);
    let volumes: Vec<&str> = volumes.lines().collect();
    for volume in ["postgres-data", "quorate-state"] {
        assert!(volumes.contains(&volume), "{volumes:?}");
    }

    for expected in [
        "pg_isready",
        "condition: service_healthy",
        "postgres-data:/var/lib/postgresql/data",
        "quorate-state:/var/lib/quorate",
        "deploy/docker/quorate.toml:/etc/quorate/quorate.toml:ro",
        "- quorate-readyz",
        "- /etc/quorate/quorate.toml",
    ] {
        assert!(
            normalized.contains(expected),
            "docker-compose config has no `{expected}`:\n{normalized}"
        );
    }

    // The image the compose file builds: a Rust build stage, a slim Debian runtime as a
    // non-root user, with the probe the healthcheck calls at the path it calls.
    let dockerfile =
        std::fs::read_to_string(repo().join("Dockerfile")).expect("reading Dockerfile");
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(stages.len(), 2, "{stages:?}");
    assert!(stages[0].starts_with("FROM rust:") && stages[0].ends_with(" AS build"));
    assert!(stages[1].starts_with("FROM debian:") && stages[1].ends_with("-slim"));
    assert!(dockerfile.contains("\nUSER quorate\n"));
    assert!(dockerfile.contains("\nCOPY deploy/docker/readyz.sh /usr/local/bin/quorate-readyz\n"));
}

#[test]
fn compose_quorate_config_passes_check_config_and_names_the_compose_database() {
    let config = std::fs::read_to_string(repo().join("deploy/docker/quorate.toml"))
        .expect("reading deploy/docker/quorate.toml");
    let dir = scratch_dir("compose-config");
    let summary = assert_quorate_accepts(dir.path(), &config);
    assert!(
        summary.contains("database postgres") && summary.contains("listen 0.0.0.0:8080"),
        "{summary}"
    );

    // database_url's user, password, host and database are the postgres service's.
    let table: toml::Table = toml::from_str(&config).expect("parsing the config");
    let url = table["database_url"].as_str().expect("database_url");
    let rest = url.strip_prefix("postgres://").expect("a postgres:// URL");
    let (credentials, location) = rest.split_once('@').expect("user:password@host");
    let (user, password) = credentials.split_once(':').expect("user:password");
    let (host_port, database) = location.split_once('/').expect("host/database");
    let host = host_port.split(':').next().unwrap_or(host_port);
    let normalized = compose_ok(&["config"]);
    assert_eq!(host, "postgres");
    for line in [
        format!("POSTGRES_USER: {user}"),
        format!("POSTGRES_PASSWORD: {password}"),
        format!("POSTGRES_DB: {database}"),
    ] {
        assert!(
            normalized.contains(&line),
            "compose has no `{line}`:\n{normalized}"
        );
    }
    assert_eq!(table["state_dir"].as_str(), Some("/var/lib/quorate"));
}

#[test]
fn container_readiness_probe_passes_against_a_ready_quorate_and_fails_without_one() {
    let probe = repo().join("deploy/docker/readyz.sh");
    let quorate = Quorate::start(
        Backend::Sqlite,
        vec![CacheSpec::nix("nixos")
            .builder("hydra", &[NIXOS_KEY])
            .upstream("http://127.0.0.1:9")],
    );
    let addr = quorate
        .url()
        .strip_prefix("http://")
        .expect("an http:// URL")
        .to_owned();
    let ready = run(Command::new("bash").arg(&probe).arg(&addr), "bash");
    assert!(
        ready.status.success(),
        "{}",
        explain("probe against quorate", &ready)
    );

    drop(quorate);
    let gone = run(Command::new("bash").arg(&probe).arg(&addr), "bash");
    assert!(
        !gone.status.success(),
        "{}",
        explain("probe passed with quorate stopped", &gone)
    );
}
