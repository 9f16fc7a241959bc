//! Database: attestations, decisions, NAR objects, events (sqlx; SQLite and PostgreSQL).
