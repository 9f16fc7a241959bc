//! Client connections, as an attacker and an unlucky operator meet them: connections that
//! never speak, keep-alive connections left idle, a client that stops reading its NAR, more
//! connections than the process has file descriptors, a port already taken, and HTTP/2 spoken
//! to a server that serves HTTP/1.1 only. A real `quorate serve` process throughout, talked to
//! over raw sockets where a client library would hide what happens.
//!
//! These stories are about the listener and the connections, below everything that touches
//! the database, so they run on SQLite only. No test asserts on time; the bounds below are
//! hang guards, generous beside quorate's own timeouts (30 s for a request head, 60 s for a
//! stalled answer).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::procfs;
use common::{block_on, fixtures, scratch_dir, Backend, CacheSpec, Quorate, UpstreamServer};

const CACHE: &str = "main";

/// How long any one wait below may take before the test fails: beyond quorate's longest
/// connection timeout (60 s), with room for a busy machine.
const HANG_GUARD: Duration = Duration::from_secs(180);

/// A Nix cache trusting fixture builder `builder` through its upstream `up`, quorum 1.
fn one_builder_cache(builder: &str, up: &UpstreamServer) -> CacheSpec {
    CacheSpec::nix(CACHE)
        .builder(
            &builder.to_lowercase(),
            &[&fixtures().builder(builder).public_key],
        )
        .upstream(up.url())
}

/// Whether the peer has closed `stream` (EOF or reset), waiting at most until `deadline`.
/// Bytes still arriving are read and dropped.
fn closed_by_peer(stream: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream
            .set_read_timeout(Some(left))
            .expect("setting a read timeout");
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return true, // reset
        }
    }
}

/// Reads an HTTP/1.1 response head from `stream`; returns it and the body bytes read past it.
fn read_head(stream: &mut TcpStream) -> (String, Vec<u8>) {
    stream
        .set_read_timeout(Some(HANG_GUARD))
        .expect("setting a read timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).into_owned();
            return (head, got[end + 4..].to_vec());
        }
        let n = stream.read(&mut buf).expect("reading a response head");
        assert!(
            n > 0,
            "connection closed before a response head: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

fn content_length(head: &str) -> u64 {
    head.lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no Content-Length in {head:?}"))
}

/// `GET url` on a new connection (no pool), within 10 s: the status and body, or why not.
async fn fresh_get(url: &str) -> Result<(u16, String), String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let response = client.get(url).send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|e| e.to_string())?;
    Ok((status, body))
}

/// Under a low open-file limit (systemd's default is 1024; here 256), more connections than
/// there are file descriptors, none of which ever sends a byte: a normal client is still
/// answered, every silent connection is closed, and quorate says that it refused some.
/// Before quorate limited and timed out connections, it ran out of descriptors, could accept
/// nobody, and kept the silent ones open for ever.
#[test]
fn silent_connections_beyond_the_open_file_limit_neither_lock_clients_out_nor_stay_open() {
    const SILENT: usize = 300;
    let fx = fixtures();
    let a = UpstreamServer::serve(&fx.builder("A").cache_dir);
    let q = Quorate::start_under(
        Backend::Sqlite,
        vec![one_builder_cache("A", &a)],
        &["prlimit", "--nofile=256:256", "--"],
    );
    assert_eq!(procfs::open_file_limit(q.pid()), (256, 256));

    // The kernel completes every handshake (backlog), whether or not quorate accepts.
    let mut silent: Vec<TcpStream> = (0..SILENT)
        .map(|i| {
            TcpStream::connect(q.addr())
                .unwrap_or_else(|e| panic!("silent connection {i} to {}: {e}", q.addr()))
        })
        .collect();

    // A new client (a connection of its own, as Nix opens), which retries a connection that
    // breaks, as Nix does: it must get its answer.
    let url = format!("{}{}", q.substituter(), fx.paths.hello.narinfo_path());
    let deadline = Instant::now() + HANG_GUARD;
    let mut failures = Vec::new();
    let answer = loop {
        match block_on(fresh_get(&url)) {
            Ok(answer) => break answer,
            Err(e) => failures.push(e),
        }
        assert!(
            Instant::now() < deadline,
            "no answer to a normal client while {SILENT} silent connections are open; \
             attempts: {failures:#?}\nquorate log:\n{}",
            q.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(answer.0, 200, "{answer:?}");
    common::report(&format!(
        "the normal client was answered after {} failed attempt(s)",
        failures.len()
    ));

    let deadline = Instant::now() + HANG_GUARD;
    let still_open = silent
        .iter_mut()
        .map(|s| closed_by_peer(s, deadline))
        .filter(|closed| !closed)
        .count();
    assert_eq!(
        still_open,
        0,
        "silent connections quorate never closed\nquorate log:\n{}",
        q.log()
    );
    assert!(
        q.log().contains("connection limit"),
        "refusals at the connection limit are logged:\n{}",
        q.log()
    );

    // Nothing is left behind: no client socket stays open in quorate.
    let port = q.addr().port();
    let deadline = Instant::now() + HANG_GUARD;
    while procfs::open_fds(q.pid(), port, &[]).clients > 0 {
        assert!(
            Instant::now() < deadline,
            "quorate still holds client sockets: {:?}",
            procfs::open_fds(q.pid(), port, &[])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A keep-alive connection whose client got its answer and then says nothing more is closed
/// by quorate (the keep-alive idle timeout), instead of holding a descriptor for ever.
#[test]
fn an_idle_keep_alive_connection_is_closed_by_quorate() {
    let fx = fixtures();
    let a = UpstreamServer::serve(&fx.builder("A").cache_dir);
    let q = Quorate::start(Backend::Sqlite, vec![one_builder_cache("A", &a)]);

    let mut stream = TcpStream::connect(q.addr()).expect("connecting to quorate");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: quorate\r\n\r\n")
        .expect("sending a request");
    let (head, mut body) = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let len = content_length(&head) as usize;
    while body.len() < len {
        let mut buf = [0u8; 1024];
        let n = stream.read(&mut buf).expect("reading the body");
        assert!(n > 0, "connection closed mid-body");
        body.extend_from_slice(&buf[..n]);
    }
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "the connection is kept alive after the answer: {head}"
    );

    assert!(
        closed_by_peer(&mut stream, Instant::now() + HANG_GUARD),
        "quorate kept an idle keep-alive connection open\nquorate log:\n{}",
        q.log()
    );
}

/// A client that asks for a large NAR and then stops reading (its receive window stays shut)
/// is disconnected: its answer breaks off, and quorate no longer holds the socket. Before,
/// quorate waited for it for ever.
#[test]
fn a_client_that_stops_reading_its_nar_is_disconnected() {
    let fx = fixtures();
    let c = UpstreamServer::serve(&fx.builder("C").cache_dir);
    let q = Quorate::start(Backend::Sqlite, vec![one_builder_cache("C", &c)]);
    let big = &fx.paths.big;
    let narinfo = q.narinfo(big);
    assert_eq!(narinfo.status, 200, "{}", narinfo.summary());
    let nar_url = narinfo
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("URL: ").map(str::to_owned))
        .expect("quorate's narinfo has a URL");

    let mut stream = TcpStream::connect(q.addr()).expect("connecting to quorate");
    let local_port = stream.local_addr().expect("local address").port();
    write!(stream, "GET /{nar_url} HTTP/1.1\r\nHost: quorate\r\n\r\n").expect("sending");
    let (head, first) = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let len = content_length(&head);
    assert_eq!(len, big.nar_size);

    // Stop reading. quorate fills the socket buffers, then must give up on this client.
    let pid = q.pid();
    let port = q.addr().port();
    assert!(
        procfs::client_ports(pid, port).contains(&local_port),
        "quorate holds the connection while it sends"
    );
    let deadline = Instant::now() + HANG_GUARD;
    while procfs::client_ports(pid, port).contains(&local_port) {
        assert!(
            Instant::now() < deadline,
            "quorate still holds a connection whose client stopped reading\nquorate log:\n{}",
            q.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // What the socket buffers held arrives; then the answer ends, short of its length.
    let mut received = first.len() as u64;
    let mut buf = vec![0u8; 256 * 1024];
    stream
        .set_read_timeout(Some(HANG_GUARD))
        .expect("setting a read timeout");
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n as u64,
        }
    }
    assert!(
        received < len,
        "the stalled answer was cut off: {received} of {len} bytes arrived"
    );
}

/// Nix and Guix speak HTTP/1.1; quorate serves nothing else. A client that opens with
/// HTTP/2 (prior knowledge, "h2c") gets no HTTP/2 answer, while HTTP/1.1 is answered.
#[test]
fn prior_knowledge_http2_is_refused_and_http1_answered() {
    let fx = fixtures();
    let a = UpstreamServer::serve(&fx.builder("A").cache_dir);
    let q = Quorate::start(Backend::Sqlite, vec![one_builder_cache("A", &a)]);
    let url = format!("{}/healthz", q.url());
    block_on(async {
        let h2 = reqwest::Client::builder()
            .http2_prior_knowledge()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("building an HTTP/2 client");
        let answer = h2.get(&url).send().await;
        assert!(
            answer.is_err(),
            "an HTTP/2 request was answered: {:?}",
            answer.map(|r| (r.version(), r.status()))
        );
        let h1 = common::http_get_async(&url, Duration::from_secs(60))
            .await
            .expect("HTTP/1.1 is answered");
        assert_eq!(h1.status, 200);
    });
}

/// Started with a soft open-file limit below the hard one (systemd's default: 1024 soft,
/// 524288 hard), quorate raises the soft limit to the hard one and says so.
#[test]
fn quorate_raises_its_open_file_limit_to_the_hard_limit() {
    let fx = fixtures();
    let a = UpstreamServer::serve(&fx.builder("A").cache_dir);
    let (_, own_hard) = procfs::open_file_limit(std::process::id());
    let hard = own_hard.min(4096);
    let limit = format!("--nofile=256:{hard}");
    let q = Quorate::start_under(
        Backend::Sqlite,
        vec![one_builder_cache("A", &a)],
        &["prlimit", &limit, "--"],
    );
    assert_eq!(procfs::open_file_limit(q.pid()), (hard, hard));
    assert!(
        q.log()
            .contains(&format!("open-file limit raised from 256 to {hard}")),
        "the raise is logged:\n{}",
        q.log()
    );
}

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
