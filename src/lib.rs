//! quorate: a substitute cache proxy for Nix and Guix that serves a store path only when a
//! quorum of independently keyed builders agree on its content, verifying the NAR bytes.
//!
//! Layers, bottom to top (data walks one way: route → decision → record → respond):
//! - [`protocol`]: pure wire formats (nix32, store paths, narinfo, keys, signatures). No I/O.
//! - [`attestation`], [`quorum`]: pure domain types and the decision rule. No I/O.
//! - [`nar`], [`upstream`], [`db`]: I/O: NAR streaming/verification/store, upstream HTTP, SQL.
//! - [`server`], [`http`]: the running service: state wiring and the axum routes.
//! - [`config`]: the TOML contract.

pub mod clock;
pub mod config;
pub mod db;
pub mod http;
pub mod nar;
pub mod resolve;
pub mod server;
pub mod upstream;
