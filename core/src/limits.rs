//! Limits on what quorate reads from upstreams, in one place.

/// Largest narinfo quorate accepts from an upstream or a client, in bytes, for both flavors.
/// Real ones are about 1 KiB (under 10 KiB with hundreds of references); 64 KiB leaves room
/// and still bounds what a hostile upstream can make quorate buffer and parse.
pub const MAX_NARINFO_BYTES: usize = 64 * 1024;
