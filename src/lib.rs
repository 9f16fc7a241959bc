//! quorate: a substitute cache proxy for Nix and Guix that serves a store path only when a
//! quorum of independently keyed builders agree on its content, verifying the NAR bytes.
//!
//! The pure layers (wire formats, keys, attestations, the quorum rule, the flavor front
//! ends) are the `quorate_core` crate. This crate is the service on top; data walks one way,
//! route → resolution → record → respond, and modules only use those listed before them:
//!
//! - foundations: [`clock`], [`limits`], [`config`], [`rate_limit`];
//! - I/O, independent of each other: [`db`] (SQL), [`upstream`] (HTTP client), [`nar`]
//!   (streaming verification and the content-addressed store), [`remote_log`] (another
//!   quorate's transparency log, checked as it is read); then [`fleet`] (one download
//!   per NAR for a whole replica set: leases in the database, relays between replicas);
//! - state: [`metrics`], [`outbox`], [`keys`], [`tlog`] (each cache's log key and stored
//!   hashes), [`served_cache`], [`tasks`], [`app`];
//! - the request path: [`record`], [`resolve`] (narinfo → decision), [`delivery`] (NAR
//!   bytes), [`pushed`] (attestations builders push), [`http`] (routes); [`changes`]: other replicas' decisions leave memory;
//!   [`evict`]: the bucket's LRU eviction, one replica at a time; [`append`]: the
//!   transparency logs grow from the recorded rows; [`witnessing`]: their checkpoints go to
//!   their witnesses; [`peers`]: other quorates' logs followed, their builders' signatures
//!   imported;
//! - [`serve`]: listening and clean shutdown; [`challenge`]: the `quorate challenge` report;
//!   [`verify`]: `quorate verify`, a client's check of a path against the transparency log;
//!   [`audit`]: `quorate audit mirror|check`, a log copied and replayed offline; [`push`]:
//!   `quorate push`, a rebuilder's signed narinfos from its local Nix store, and its queue.

pub mod clock;
pub mod config;
pub mod limits;
pub mod rate_limit;

pub mod db;
pub mod nar;
pub mod remote_log;
pub mod upstream;

pub mod fleet;

pub mod app;
pub mod keys;
pub mod metrics;
pub mod outbox;
pub mod served_cache;
pub mod tasks;
pub mod tlog;

pub mod delivery;
pub mod http;
pub mod pushed;
pub mod record;
pub mod resolve;

pub mod append;
pub mod changes;
pub mod evict;
pub mod peers;
pub mod witnessing;

pub mod serve;

pub mod audit;
pub mod challenge;
pub mod push;
pub mod verify;
