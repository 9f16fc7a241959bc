//! Upstream HTTP: narinfo fan-out and NAR downloads.
