//! The listener and client connections, as an unlucky operator meets them: a port already
//! taken. A real `quorate serve` process.
//!
//! These stories are about the listener and the connections, below everything that touches
//! the database, so they run on SQLite only. No test asserts on time; the bounds below are
//! hang guards.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fixtures, scratch_dir};

const CACHE: &str = "main";

/// How long any one wait below may take before the test fails.
const HANG_GUARD: Duration = Duration::from_secs(180);

/// Started on a port another process holds, quorate fails at once with one sentence naming
/// the address, and exits 1 before it creates its state directory, database or keys.
#[test]
fn quorate_on_a_taken_port_fails_at_once_and_writes_nothing() {
    let fx = fixtures();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a port");
    let addr = taken.local_addr().expect("its address");
    let dir = scratch_dir("taken-port");
    let state_dir = dir.path().join("state");
    let config = dir.path().join("quorate.toml");
    let text = format!(
        "listen = \"{addr}\"\nstate_dir = \"{}\"\n\n[[cache]]\nname = \"{CACHE}\"\nflavor = \"nix\"\n\
         quorum = 1\n  [[cache.builder]]\n  name = \"a\"\n  keys = [\"{}\"]\n  \
         [[cache.upstream]]\n  url = \"http://127.0.0.1:9\"\n",
        state_dir.display(),
        fx.builder("A").public_key
    );
    std::fs::write(&config, text).expect("writing the config");

    let mut child = Command::new(env!("CARGO_BIN_EXE_quorate"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("QUORATE_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning quorate serve");
    let deadline = Instant::now() + HANG_GUARD;
    while child.try_wait().expect("waiting for quorate").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("quorate kept running on a port it could not listen on");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("quorate's output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one sentence on stderr, got: {stderr}");
    assert!(
        lines[0].contains(&format!("cannot listen on {addr}")) && lines[0].contains("in use"),
        "the error names the address and the cause: {stderr}"
    );
    assert!(
        stdout.is_empty(),
        "nothing printed before failing: {stdout}"
    );
    assert!(
        !state_dir.exists(),
        "the state directory was created before the port was known to be free"
    );
    drop(taken);
}
