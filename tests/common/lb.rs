//! A real HTTP load balancer in front of a replica set: Debian's nginx, round-robin, with
//! passive health checks, as an operator would run it (README "Scale-out").
//!
//! - Round-robin over the replicas; a connection refused, a reset before the response head or
//!   a connect timeout sends the request on to the next replica (`proxy_next_upstream error
//!   timeout`), and marks the failed one down for a while (`max_fails=1`): a killed replica is
//!   skipped, and the client does not notice.
//! - No buffering (`proxy_buffering off`): NAR bytes pass through as quorate sends them, so a
//!   transfer that quorate aborts is aborted for the client too (never completed from a
//!   spool), and memory stays quorate's.
//! - HTTP/1.1 with keep-alive to the replicas.
//! - The access log names the replica that answered each request ([`Balancer::requests`]).
//!
//! nginx runs in the foreground as one process (`master_process off`: nothing to reap but the
//! child itself), from a scratch directory, on a free port; stopped on drop. The binary:
//! `QUORATE_TEST_NGINX`, else `nginx` on the PATH or `/usr/sbin/nginx` (Debian package
//! `nginx`, which `scripts/test.sh` installs).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::fleet::ReplicaSet;
use super::quorate::free_port;
use super::scratch_dir;

/// One request as the balancer logged it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BalancedRequest {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The request URI.
    pub uri: String,
    /// The status the client got.
    pub status: u16,
    /// Every replica tried, in order (`127.0.0.1:PORT`): more than one when the first failed.
    pub replicas: Vec<String>,
    /// Body bytes sent to the client.
    pub bytes: u64,
}

/// A running nginx balancing over some backends.
pub struct Balancer {
    child: Child,
    port: u16,
    access_log: PathBuf,
    error_log: PathBuf,
    /// Config, logs, temp dirs; deleted on drop (unless QUORATE_TEST_KEEP=1).
    dir: tempfile::TempDir,
}

/// The nginx binary: `QUORATE_TEST_NGINX`, else `nginx` on the PATH, else `/usr/sbin/nginx`.
pub fn nginx_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("QUORATE_TEST_NGINX") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nginx"))
            .find(|p| p.is_file())
    });
    let binary = on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"));
    assert!(
        binary.is_file(),
        "no nginx found (PATH, /usr/sbin/nginx): install the Debian package nginx \
         (scripts/test.sh does), or set QUORATE_TEST_NGINX"
    );
    binary
}

impl Balancer {
    /// nginx round-robin over `backends` (`127.0.0.1:PORT` or `http://127.0.0.1:PORT`), in
    /// that order; returns once it accepts connections. From any thread.
    pub fn start(backends: &[String]) -> Balancer {
        assert!(!backends.is_empty(), "a balancer needs a backend");
        let mut attempt = 1;
        loop {
            match Balancer::try_start(backends) {
                Ok(b) => return b,
                Err(log) if attempt < 3 && log.contains("in use") => attempt += 1,
                Err(log) => panic!("nginx did not start.\n{log}"),
            }
        }
    }

    /// nginx in front of every replica of `set`.
    pub fn in_front_of(set: &ReplicaSet) -> Balancer {
        Balancer::start(&set.urls())
    }

    fn try_start(backends: &[String]) -> Result<Balancer, String> {
        let dir = scratch_dir("balancer");
        let port = free_port();
        let config_path = dir.path().join("nginx.conf");
        let access_log = dir.path().join("access.log");
        let error_log = dir.path().join("error.log");
        std::fs::write(
            &config_path,
            render_config(dir.path(), port, backends, &access_log, &error_log),
        )
        .expect("writing nginx.conf");
        let log = std::fs::File::create(dir.path().join("nginx.out")).expect("nginx.out");
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(&error_log)
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning nginx: {e} (install the Debian package nginx)"));
        let mut balancer = Balancer {
            child,
            port,
            access_log,
            error_log,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = balancer.child.try_wait() {
                return Err(format!("(nginx exited: {status})\n{}", balancer.logs()));
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(balancer);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "nginx did not listen within 30 s\n{}",
                    balancer.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The balancer's base URL, `http://127.0.0.1:PORT`: what clients use.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request logged so far, in order. nginx writes a request's line when it is done.
    pub fn requests(&self) -> Vec<BalancedRequest> {
        let text = std::fs::read_to_string(&self.access_log).unwrap_or_default();
        text.lines().filter_map(parse_access_line).collect()
    }

    /// nginx's error log and output so far.
    pub fn logs(&self) -> String {
        let out = std::fs::read_to_string(self.dir.path().join("nginx.out")).unwrap_or_default();
        let errors = std::fs::read_to_string(&self.error_log).unwrap_or_default();
        format!("nginx output:\n{out}\nnginx error log:\n{errors}")
    }

    /// The scratch directory (config, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "===== balancer =====\n{}\n===== end of balancer =====",
                self.logs()
            );
        }
    }
}

/// `METHOD URI STATUS UPSTREAMS BYTES`, where UPSTREAMS is nginx's `$upstream_addr` (`a, b`
/// when the request went on to the next replica); `-` fields stay empty.
fn parse_access_line(line: &str) -> Option<BalancedRequest> {
    let mut fields = line.split('\t');
    let method = fields.next()?.to_owned();
    let uri = fields.next()?.to_owned();
    let status = fields.next()?.parse().ok()?;
    let replicas = fields
        .next()?
        .split([',', ':'])
        .collect::<Vec<_>>()
        .chunks(2)
        .filter(|hp| hp.len() == 2)
        .map(|hp| format!("{}:{}", hp[0].trim(), hp[1].trim()))
        .collect();
    let bytes = fields.next()?.parse().unwrap_or(0);
    Some(BalancedRequest {
        method,
        uri,
        status,
        replicas,
        bytes,
    })
}

fn render_config(
    dir: &Path,
    port: u16,
    backends: &[String],
    access_log: &Path,
    error_log: &Path,
) -> String {
    let d = dir.display();
    let servers: String = backends
        .iter()
        .map(|b| {
            let addr = b.trim_start_matches("http://").trim_end_matches('/');
            // max_fails=1: one failed connection takes the replica out for fail_timeout;
            // after that nginx tries it again with live traffic.
            format!("        server {addr} max_fails=1 fail_timeout=5s;\n")
        })
        .collect();
    format!(
        "# written by tests/common/lb.rs\n\
         daemon off;\n\
         master_process off;\n\
         pid {d}/nginx.pid;\n\
         error_log {err} info;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
         \x20   log_format balancer '$request_method\\t$request_uri\\t$status\\t$upstream_addr\\t$body_bytes_sent';\n\
         \x20   access_log {access} balancer;\n\
         \x20   client_body_temp_path {d}/body;\n\
         \x20   proxy_temp_path {d}/proxy;\n\
         \x20   fastcgi_temp_path {d}/fastcgi;\n\
         \x20   uwsgi_temp_path {d}/uwsgi;\n\
         \x20   scgi_temp_path {d}/scgi;\n\
         \x20   upstream quorate {{\n\
         {servers}\
         \x20       keepalive 32;\n\
         \x20   }}\n\
         \x20   server {{\n\
         \x20       listen 127.0.0.1:{port};\n\
         \x20       location / {{\n\
         \x20           proxy_pass http://quorate;\n\
         \x20           proxy_http_version 1.1;\n\
         \x20           proxy_set_header Connection \"\";\n\
         \x20           proxy_set_header Host $http_host;\n\
         \x20           proxy_buffering off;\n\
         \x20           proxy_request_buffering off;\n\
         \x20           proxy_next_upstream error timeout;\n\
         \x20           proxy_connect_timeout 2s;\n\
         \x20           proxy_read_timeout 300s;\n\
         \x20           proxy_send_timeout 300s;\n\
         \x20       }}\n\
         \x20   }}\n\
         }}\n",
        err = error_log.display(),
        access = access_log.display(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn access_lines_name_every_replica_tried() {
        let line = "GET\t/nix-cache-info\t200\t127.0.0.1:4001, 127.0.0.1:4002\t57";
        let r = super::parse_access_line(line).expect("parsed");
        assert_eq!(r.uri, "/nix-cache-info");
        assert_eq!(r.status, 200);
        assert_eq!(r.replicas, ["127.0.0.1:4001", "127.0.0.1:4002"]);
        assert_eq!(r.bytes, 57);
        let none = super::parse_access_line("GET\t/x\t502\t-\t0").expect("parsed");
        assert!(none.replicas.is_empty());
    }
}
