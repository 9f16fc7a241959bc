//! Every limit and lifetime the service enforces, in one place: how big, how many, how long.
//! Tuning knobs that only shape throughput (chunk and channel sizes of the NAR pipeline) stay
//! beside the code they tune.

use std::time::Duration;

pub use quorate_core::limits::MAX_NARINFO_BYTES;

/// How long a negative answer (404) is remembered in memory and announced to clients
/// (`Cache-Control: max-age`). Short: a path may reach its quorum a minute later.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(60);

/// How long a served path whose decision is not logged yet is remembered as such: a narinfo
/// asks the database for its `Quorate-Log-Index` at most this often (the appender runs
/// every second), not once per request.
pub const LOG_INDEX_RETRY: Duration = Duration::from_secs(1);

/// How long a positive decision stays hot in memory (the database keeps it for good).
pub const POSITIVE_TTL: Duration = Duration::from_secs(3600);

/// `Cache-Control: max-age` of a served narinfo: clients may keep it a day (Guix honours it).
pub const NARINFO_MAX_AGE: Duration = Duration::from_secs(86_400);
/// `max-age` of a narinfo offering the NAR uncompressed while its zstd copy is being made
/// (`nar_compression = "zstd"`): HTTP caches in front of quorate ask again soon and get the
/// compressed form.
pub const UNCOMPRESSED_NARINFO_MAX_AGE: Duration = Duration::from_secs(60);

/// `Cache-Control: max-age` of `nix-cache-info`.
pub const CACHE_INFO_MAX_AGE: Duration = Duration::from_secs(3600);

/// Log indexes of hot decisions kept per cache.
pub const DECISIONS_CAPACITY: u64 = 200_000;

/// Bytes of hot answers (narinfo bodies and the agreements behind them) kept per cache,
/// as `served_cache::Resolution::approx_bytes` counts them (~3 KB per served path: some
/// 55,000 paths).
pub const DECISIONS_BYTES: u64 = 160 << 20;

/// Bytes of NAR entries (what is needed to fetch and verify a NAR) kept per cache, as
/// `served_cache::NarEntry::approx_bytes` counts them (~1.5 KB each).
pub const NAR_ENTRIES_BYTES: u64 = 48 << 20;

/// (NAR, upstream) pairs that delivered wrong bytes, remembered per cache, and for how long
/// such an upstream is tried last for that NAR.
pub const BAD_SOURCES_CAPACITY: u64 = 10_000;
/// See [`BAD_SOURCES_CAPACITY`].
pub const BAD_SOURCE_TTL: Duration = Duration::from_secs(3600);

/// How long one upstream request may take when the config does not say (`upstream_timeout`):
/// connecting, then the wait for the response head; for a narinfo, the whole answer.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a caller waits for a pooled database connection. Short, so that a database
/// outage answers 503 (and `/readyz` fails) at once instead of holding every request.
pub const DB_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a SQLite connection waits for another writer before giving up.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Records waiting for the database (written during an outage, or a full disk) kept in
/// memory until it answers again; past this, the oldest are dropped (logged and counted).
pub const OUTBOX_CAPACITY: usize = 100_000;

/// How long an upstream body (NAR, build log) may go without a byte when the config does not
/// say (`upstream_idle_timeout`). A stalled NAR download is abandoned after this and the NAR
/// is fetched from the next upstream that offers it.
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// While another source offers the NAR, a NAR download is abandoned for it when its first
/// byte has not come this soon after asking (the response head included)...
pub const SWITCH_FIRST_BYTE: Duration = Duration::from_secs(5);
/// ... when no byte comes for this long...
pub const SWITCH_STALL: Duration = Duration::from_secs(5);
/// ... or when, over a window of this much time spent waiting for it, it delivers less than
/// [`SWITCH_MIN_RATE`]. The next source resumes after the bytes already decoded (`nar::fetch`),
/// so clients already streaming do not see the switch. The last source is held only to
/// `upstream_timeout`, `upstream_idle_timeout` and [`nar_deadline`].
pub const SWITCH_WINDOW: Duration = Duration::from_secs(10);
/// See [`SWITCH_WINDOW`]: bytes per second as sent (compressed), 1 MiB/s.
pub const SWITCH_MIN_RATE: u64 = 1 << 20;

/// A whole NAR download may take the upstream timeout plus its NarSize at
/// [`NAR_MIN_THROUGHPUT`], and at most [`NAR_DEADLINE_MAX`]: the idle timeout alone would let
/// an upstream dripping one byte just inside it hold a fetch (and its clients) for ever.
/// Uncompressed bytes per second, so a compressed transfer needs less than this on the wire
/// (2 Mbit/s, a slow home link).
pub const NAR_MIN_THROUGHPUT: u64 = 256 * 1024;
/// See [`NAR_MIN_THROUGHPUT`].
pub const NAR_DEADLINE_MAX: Duration = Duration::from_secs(12 * 3600);

/// The whole-transfer deadline of a NAR of `nar_size` bytes whose upstream had `head` to
/// answer (see [`NAR_MIN_THROUGHPUT`]).
pub fn nar_deadline(head: Duration, nar_size: u64) -> Duration {
    let transfer = Duration::from_secs(nar_size / NAR_MIN_THROUGHPUT);
    head.saturating_add(transfer).min(NAR_DEADLINE_MAX)
}

/// A passed-through build log may take this long in all (it is informational; a log bigger
/// than this at a working upstream's speed is not worth holding a connection for).
pub const LOG_DEADLINE: Duration = Duration::from_secs(300);

/// Redirects followed for one upstream request (each checked against the upstream's
/// allowed origins; see `upstream::urls`).
pub const MAX_UPSTREAM_REDIRECTS: usize = 5;

/// How long an idle upstream connection is kept for reuse.
pub const UPSTREAM_POOL_IDLE: Duration = Duration::from_secs(60);

/// Memory for NAR chunks read from local files and not yet sent, all clients together
/// (`nar::read`): reads are 1 MiB while at least half of it is free, 256 KiB while an eighth
/// is, else 64 KiB; when it is spent, reads wait for chunks to be sent.
pub const CLIENT_READ_BUDGET: usize = 64 << 20;

/// Upper bound of an xz block's dictionary and decoder state, in KiB. xz headers are
/// upstream-controlled; without a bound a crafted header could ask for gigabytes. `xz -9`
/// (the largest preset, used by Hydra) needs 64 MiB, so 256 MiB leaves room.
pub const XZ_MEM_LIMIT_KIB: u32 = 256 * 1024;

/// The same bound for lzip: its header may ask for a 512 MiB dictionary, which an upstream
/// must not be able to make us allocate (`lzip -9` uses 32 MiB).
pub const LZIP_MEM_LIMIT_KIB: u32 = 256 * 1024;

/// On SIGTERM/SIGINT: how long open client connections may take to finish, and then how long
/// background work (NAR fetches, late-answer recording) may take to drain, before the
/// process exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// How long a client has, from connecting or from the end of its previous answer, to send a
/// complete request head. hyper runs one timer for both waits, so this is at once the
/// header-read timeout (slow or silent clients) and the keep-alive idle timeout.
pub const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an answer may make no progress because the client stopped reading it (its
/// receive window stays shut) before the connection is closed. nginx's `send_timeout` is the
/// same idea, with the same default.
pub const CLIENT_WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Client connections open at once when the config does not say (`max_connections`), if
/// the open-file limit allows that many. Each idle HTTP/1.1 connection costs some 10-20 KiB;
/// 4096 of them stay well inside a small machine's memory.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// File descriptors kept back from client connections: the database pool, the listener, the
/// runtime's own, log files, NAR fetches' temp files.
pub const FD_RESERVE: u64 = 64;

/// File descriptors budgeted per client connection: its socket, the NAR file it may be
/// reading, and room for the upstream sockets its cold request fans out to. The connection
/// limit is at most `(open-file limit - FD_RESERVE) / FDS_PER_CONNECTION`.
pub const FDS_PER_CONNECTION: u64 = 3;

/// At the connection limit, a connection with no request in progress for this long may be
/// closed to admit a new one. Not shorter: a client that has just connected, or just had its
/// answer handed to the socket, is not idle yet.
pub const IDLE_BEFORE_CLOSABLE: Duration = Duration::from_secs(1);

/// At most one warning this often about connections refused or closed at the limit, or
/// about failing `accept` calls; each says how many happened since the last one.
pub const CONNECTION_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// How often a followed peer's log (`[[cache.peer]]`) is read, unless its `interval` says.
pub const PEER_INTERVAL: Duration = Duration::from_secs(10);

/// Entries imported from a peer's log per round (one entry bundle: at most 16 MiB held): a
/// long log is caught up over many rounds, one a second.
pub const PEER_BATCH: u64 = 256;

/// Deadline of one request to a peer's log (its checkpoint, a tile, an entry bundle).
pub const PEER_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest answer read from a peer's log: an entry bundle of 256 entries of at most
/// 64 KiB each, with their length prefixes.
pub const PEER_MAX_BODY: usize = 256 * (65_535 + 2);
/// Largest body of `POST /api/v1/caches/<cache>/attestations` (pushed narinfos), in bytes;
/// a larger one is refused with 413 before it is read in full. A narinfo is about 1 KiB (at
/// most [`MAX_NARINFO_BYTES`]), so this holds a hundred of the largest and thousands of the
/// usual ones; `quorate push` sends at most a hundred at a time.
pub const MAX_PUSH_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Most narinfos one push may carry (413 beyond): what one request makes quorate verify and
/// record in one transaction. Lower when a `[push]` rate allows fewer at once.
pub const MAX_PUSHED_NARINFOS: usize = 1000;

/// Narinfos a minute one builder key may push into one cache when the config does not say
/// (`[push] per_key_per_minute`), and how many at once. Bounds what one key (a stolen one,
/// or a rebuilder gone wrong) can add to the database and the transparency log; 20 a second
/// keeps up with a busy rebuilder.
pub const DEFAULT_PUSH_PER_KEY_PER_MINUTE: u32 = 1200;

/// Narinfos a minute one client address (IPv6: its /64) may push when the config does not
/// say (`[push] per_client_per_minute`), accepted or not: bounds the signature checks
/// anyone can make quorate do.
pub const DEFAULT_PUSH_PER_CLIENT_PER_MINUTE: u32 = 1200;

/// Parties (keys, client addresses) a rate limiter remembers at once; past this, those whose
/// bucket is full again are forgotten.
pub const RATE_LIMIT_PARTIES: usize = 100_000;

/// How long a pushed body may take to arrive in full (`POST .../attestations`): a client
/// sending it too slowly must not hold its connection for ever.
pub const PUSH_BODY_DEADLINE: Duration = Duration::from_secs(60);
