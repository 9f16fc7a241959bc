//! Configuration (TOML contract of DESIGN §7).
