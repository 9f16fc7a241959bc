//! The command line as an operator meets it: `check-config` and `serve` on the signing key
//! files they are given. Runs the real `quorate` binary.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const HYDRA: &str = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";

fn quorate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quorate"))
        .args(args)
        .output()
        .expect("running quorate")
}

/// A config whose one cache signs with `key_file` (relative to the config's directory).
fn config(dir: &Path, key_file: &str) -> String {
    let path = dir.join("quorate.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\n\
             [[cache]]\nname = \"nixos\"\nflavor = \"nix\"\nsigning_key_file = \"{key_file}\"\n\
             [[cache.builder]]\nname = \"hydra\"\nkeys = [\"{HYDRA}\"]\n\
             [[cache.upstream]]\nurl = \"http://127.0.0.1:9\"\n"
        ),
    )
    .expect("writing the config");
    path.display().to_string()
}

fn keygen(dir: &Path, name: &str) -> String {
    let prefix = dir.join(name);
    let out = quorate(&[
        "keygen",
        "--flavor",
        "nix",
        "--name",
        "quorate-1",
        "--out",
        &prefix.display().to_string(),
    ]);
    assert!(out.status.success(), "{out:?}");
    format!("{name}.sec")
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn check_config_accepts_a_private_key_and_notes_a_missing_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = keygen(dir.path(), "good");
    let out = quorate(&["check-config", "--config", &config(dir.path(), &key)]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = quorate(&[
        "check-config",
        "--config",
        &config(dir.path(), "absent.sec"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("does not exist yet"), "{said}");
}

#[test]
fn check_config_refuses_a_garbage_or_world_readable_signing_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("garbage.sec"), "not a key\n").expect("write");
    chmod(&dir.path().join("garbage.sec"), 0o600);
    let out = quorate(&[
        "check-config",
        "--config",
        &config(dir.path(), "garbage.sec"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr(&out).contains("not a Nix secret key"),
        "{}",
        stderr(&out)
    );

    let key = keygen(dir.path(), "exposed");
    chmod(&dir.path().join(&key), 0o644);
    let out = quorate(&["check-config", "--config", &config(dir.path(), &key)]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
}

#[test]
fn serve_refuses_to_start_with_a_world_readable_signing_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = keygen(dir.path(), "exposed");
    chmod(&dir.path().join(&key), 0o604);
    let out = quorate(&["serve", "--config", &config(dir.path(), &key)]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = stderr(&out);
    assert!(said.contains("readable by every user"), "{said}");
    assert!(!said.contains("panicked"), "{said}");
}

/// `quorate keygen --flavor log` makes a transparency log key pair: the secret in Go's note
/// format (mode 0600), the vkey beside it, both named by the origin given, and printed.
#[test]
fn keygen_makes_a_transparency_log_key_named_by_its_origin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = dir.path().join("nixos.log");
    let out = quorate(&[
        "keygen",
        "--flavor",
        "log",
        "--name",
        "cache.example.org/tlog/nixos",
        "--out",
        prefix.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sec = std::fs::read_to_string(dir.path().join("nixos.log.sec")).unwrap();
    let vkey = std::fs::read_to_string(dir.path().join("nixos.log.pub")).unwrap();
    let key: quorate_core::tlog::note::SignerKey = sec.trim().parse().expect("a note signer key");
    assert_eq!(key.name(), "cache.example.org/tlog/nixos");
    assert_eq!(vkey.trim(), key.verifier().to_string());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), vkey.trim());
    let mode = std::fs::metadata(dir.path().join("nixos.log.sec"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// `check-config` on the config `config` writes, with `builder_lines` added to hydra's
/// `[[cache.builder]]` and `cache_lines` to the `[[cache]]` table: (exit status, stderr).
fn check_policy(dir: &Path, cache_lines: &str, builder_lines: &str) -> (bool, String) {
    let path = config(dir, "quorate.sec");
    let text = std::fs::read_to_string(&path).expect("reading the config");
    let text = text
        .replace(
            "signing_key_file",
            &format!("{cache_lines}\nsigning_key_file"),
        )
        .replace(
            &format!("keys = [\"{HYDRA}\"]"),
            &format!("keys = [\"{HYDRA}\"]\n{builder_lines}"),
        );
    std::fs::write(&path, text).expect("writing the config");
    let out = quorate(&["check-config", "--config", &path]);
    (out.status.success(), stderr(&out))
}

#[test]
fn check_config_names_the_key_of_a_bad_weight_revocation_or_block() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = "/nix/store/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10";
    // A valid policy passes.
    let (ok, err) = check_policy(
        dir.path(),
        &format!("quorum = 2\nblocked = [{{ path = \"{path}\", reason = \"CVE\" }}]"),
        &format!(
            "weight = 2\nrevoked = [{{ key = \"{HYDRA}\", since = \"2026-11-01T00:00:00Z\" }}]"
        ),
    );
    assert!(ok, "{err}");
    let cases = [
        ("", "weight = 0", "`cache[0].builder[0].weight`"),
        ("quorum = 3", "weight = 2", "`cache[0].quorum`"),
        (
            "",
            "revoked = [{ key = \"other-1:Qp0EY9+5bPDeCPWOJJ4EGzQkzgKxzOdvHh6rybfrZ6s=\", since = \"2026-11-01T00:00:00Z\" }]",
            "`cache[0].builder[0].revoked[0].key`",
        ),
        (
            "",
            &format!("revoked = [{{ key = \"{HYDRA}\", since = \"next tuesday\" }}]"),
            "`cache[0].builder[0].revoked[0].since`",
        ),
        (
            "blocked = [{ path = \"/gnu/store/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10\", reason = \"x\" }]",
            "",
            "`cache[0].blocked[0].path`",
        ),
        (
            "blocked = [{ nar_hash = \"sha256:nope\", reason = \"x\" }]",
            "",
            "`cache[0].blocked[0].nar_hash`",
        ),
        ("blocked = [{ reason = \"x\" }]", "", "`cache[0].blocked[0]`"),
    ];
    for (cache_lines, builder_lines, key) in cases {
        let (ok, err) = check_policy(dir.path(), cache_lines, builder_lines);
        assert!(!ok, "{cache_lines} {builder_lines}: accepted");
        assert!(err.contains(key), "{cache_lines} {builder_lines}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
