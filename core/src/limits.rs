//! Limits on what quorate reads from upstreams, in one place.

/// Largest narinfo quorate accepts from an upstream or a client, in bytes, for both flavors.
/// Real ones are about 1 KiB (under 10 KiB with hundreds of references); 64 KiB leaves room
/// and still bounds what a hostile upstream can make quorate buffer and parse.
pub const MAX_NARINFO_BYTES: usize = 64 * 1024;

/// Largest NarSize or FileSize a narinfo may state: 2^63 - 1. No file can be larger (file
/// sizes and offsets are signed 64-bit integers, `off_t`), and neither can the integers a
/// database stores them in; a narinfo claiming more is malformed, not a huge NAR, so one
/// upstream saying so cannot make the path impossible to record.
pub const MAX_NAR_SIZE: u64 = i64::MAX as u64;
