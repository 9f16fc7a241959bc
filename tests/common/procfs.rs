//! A process as Linux shows it under `/proc`: its resident memory, its open file descriptors
//! sorted by kind, and its open-file limit. The connection and load stories check with these
//! that nothing leaks: sockets, files, memory.

use std::collections::HashMap;
use std::path::Path;

/// The open file descriptors of a process, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenFds {
    /// Every entry of `/proc/<pid>/fd`.
    pub total: usize,
    /// TCP connections accepted on the listening port (the listener itself not counted).
    pub clients: usize,
    /// TCP connections to one of the given upstream ports.
    pub upstreams: usize,
    /// Other sockets: the listener, database connections, the runtime's own.
    pub other_sockets: usize,
    /// Everything else: files (NAR store, temp files, the database), pipes, eventfds, epoll.
    pub other: usize,
}

/// One TCP socket of the process's network namespace.
#[derive(Clone, Copy, Debug)]
struct TcpSocket {
    local_port: u16,
    remote_port: u16,
    /// Linux's state number: 1 established, 10 listen, ...
    state: u8,
}

const TCP_LISTEN: u8 = 10;

/// `/proc/<pid>/fd`, sorted by kind: connections accepted on `listen_port` are clients,
/// connections to one of `upstream_ports` upstreams.
pub fn open_fds(pid: u32, listen_port: u16, upstream_ports: &[u16]) -> OpenFds {
    let sockets = tcp_sockets(pid);
    let mut fds = OpenFds::default();
    for inode in fd_targets(pid) {
        fds.total += 1;
        match inode.and_then(|i| sockets.get(&i)) {
            Some(s) if s.local_port == listen_port && s.state != TCP_LISTEN => fds.clients += 1,
            Some(s) if upstream_ports.contains(&s.remote_port) => fds.upstreams += 1,
            Some(_) => fds.other_sockets += 1,
            None if inode.is_some() => fds.other_sockets += 1, // unix, netlink, UDP
            None => fds.other += 1,
        }
    }
    fds
}

/// The remote ports of the client connections the process holds open on `listen_port`.
pub fn client_ports(pid: u32, listen_port: u16) -> Vec<u16> {
    let sockets = tcp_sockets(pid);
    fd_targets(pid)
        .into_iter()
        .flatten()
        .filter_map(|inode| sockets.get(&inode))
        .filter(|s| s.local_port == listen_port && s.state != TCP_LISTEN)
        .map(|s| s.remote_port)
        .collect()
}

/// Resident memory (`VmRSS`), in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmRSS:")
}

/// The open-file limit as (soft, hard), from `/proc/<pid>/limits`.
pub fn open_file_limit(pid: u32) -> (u64, u64) {
    let path = format!("/proc/{pid}/limits");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no `Max open files` in {path}:\n{text}"));
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match numbers[..] {
        [soft, hard, ..] => (soft, hard),
        _ => panic!("cannot read the open-file limit from `{line}`"),
    }
}

fn status_field(pid: u32, field: &str) -> u64 {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {path}"))
}

/// Per entry of `/proc/<pid>/fd`: the socket inode it points to, or `None` for anything else.
/// Entries that vanish while being read (a file just closed) are skipped.
fn fd_targets(pid: u32) -> Vec<Option<u64>> {
    let dir = format!("/proc/{pid}/fd");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {dir}: {e}"));
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|target| {
            let target = target.to_string_lossy().into_owned();
            target
                .strip_prefix("socket:[")
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|inode| inode.parse().ok())
        })
        .collect()
}

/// The TCP sockets (IPv4 and IPv6) of the process's network namespace, by inode.
fn tcp_sockets(pid: u32) -> HashMap<u64, TcpSocket> {
    let mut sockets = HashMap::new();
    for table in ["tcp", "tcp6"] {
        let path = format!("/proc/{pid}/net/{table}");
        if !Path::new(&path).exists() {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let port = |addr: &str| {
                addr.rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            };
            let (Some(local_port), Some(remote_port), Ok(state), Ok(inode)) = (
                port(f[1]),
                port(f[2]),
                u8::from_str_radix(f[3], 16),
                f[9].parse::<u64>(),
            ) else {
                continue;
            };
            sockets.insert(
                inode,
                TcpSocket {
                    local_port,
                    remote_port,
                    state,
                },
            );
        }
    }
    sockets
}
