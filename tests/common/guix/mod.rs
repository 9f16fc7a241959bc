//! The Guix side of the end-to-end tests, on top of the rest of [`super`] (quorate, upstream
//! servers, HTTP):
//!
//! - [`oracle`]: the libgcrypt side, through the Guile scripts in `tests/oracle/` (keys as
//!   `guix archive --generate-key` makes them, narinfos as `guix publish` signs them, checks as
//!   `guix substitute` and `guix archive --authorize` make them, libgcrypt's s-expressions).
//! - [`world`]: builders, store items (real NARs by `nix-store --dump`), and what each
//!   guix-publish-style upstream serves, honest or not.
//! - [`narinfo`]: narinfo fields read the way Guix reads them.

pub mod narinfo;
pub mod oracle;
pub mod world;
