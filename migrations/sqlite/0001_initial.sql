-- quorate schema 1 (SQLite). Keep in step with migrations/postgres/0001_initial.sql: same
-- tables, columns and meaning; only the dialect differs (INTEGER vs BIGINT, rowid vs identity).
-- Timestamps are Unix milliseconds. Applied by src/db/migrate.rs inside one transaction.
-- Never edit this file once released: add a new numbered migration instead (the runner
-- refuses a database whose recorded checksum differs from the embedded file).

-- Upstream base URLs quorate has fetched from.
CREATE TABLE upstreams (
    url        TEXT    NOT NULL PRIMARY KEY,
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
) STRICT;

-- Builder keys configured per cache, as seen over time (a key removed from the config keeps
-- its row: old attestations still name it).
CREATE TABLE builder_keys (
    cache      TEXT    NOT NULL,
    builder    TEXT    NOT NULL,
    public_key TEXT    NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    PRIMARY KEY (cache, builder, public_key)
) STRICT;

-- Every signed claim observed, append-only, one row per distinct observation. The identity
-- (cache, hash_part, upstream, key_name, signature, store_path, nar_hash, nar_size, refs) is
-- hashed into observation_key rather than indexed directly: references and Guix signatures
-- can exceed what a B-tree index entry may hold. Seeing the same observation again moves
-- last_seen (and refreshes the verdict); rows are never deleted or re-keyed. `id` is
-- AUTOINCREMENT so ids are never reused.
CREATE TABLE attestations (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    observation_key TEXT    NOT NULL UNIQUE,
    cache           TEXT    NOT NULL,
    hash_part       TEXT    NOT NULL,
    store_path      TEXT    NOT NULL,
    nar_hash        TEXT    NOT NULL,
    nar_size        INTEGER NOT NULL CHECK (nar_size >= 0),
    refs            TEXT    NOT NULL, -- space-joined, in the order given (Guix order matters)
    deriver         TEXT,
    ca              TEXT,
    key_name        TEXT    NOT NULL,
    builder         TEXT,
    upstream        TEXT    NOT NULL,
    signature       TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('valid', 'invalid', 'unknown_key')),
    first_seen      INTEGER NOT NULL,
    last_seen       INTEGER NOT NULL
) STRICT;
CREATE INDEX attestations_by_path ON attestations (cache, hash_part, status);
CREATE INDEX attestations_by_nar ON attestations (cache, nar_hash);

-- Where upstreams say a NAR can be downloaded. Unique on (cache, upstream, nar_hash, url),
-- hashed into source_key for the same reason as observation_key (URLs come from upstreams).
CREATE TABLE nar_sources (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    source_key  TEXT    NOT NULL UNIQUE,
    cache       TEXT    NOT NULL,
    upstream    TEXT    NOT NULL,
    nar_hash    TEXT    NOT NULL,
    url         TEXT    NOT NULL,
    compression TEXT    NOT NULL,
    file_size   INTEGER CHECK (file_size >= 0),
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL
) STRICT;
CREATE INDEX nar_sources_by_nar ON nar_sources (cache, nar_hash);

-- Decisions with their history: the latest row per (cache, hash_part) by id is in force.
-- The content columns are all set or all NULL.
CREATE TABLE decisions (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    cache              TEXT    NOT NULL,
    hash_part          TEXT    NOT NULL,
    store_path         TEXT,
    outcome            TEXT    NOT NULL
        CHECK (outcome IN ('accepted', 'refused', 'insufficient', 'withdrawn')),
    content_store_path TEXT,
    nar_hash           TEXT,
    nar_size           INTEGER CHECK (nar_size >= 0),
    refs               TEXT,
    deriver            TEXT,
    ca                 TEXT,
    agreeing           TEXT    NOT NULL, -- JSON array of builder names
    dissenters         TEXT    NOT NULL, -- JSON array of builder names
    policy             TEXT    NOT NULL,
    decided_at         INTEGER NOT NULL,
    CHECK ((content_store_path IS NULL) = (nar_hash IS NULL)
       AND (nar_hash IS NULL) = (nar_size IS NULL)
       AND (nar_size IS NULL) = (refs IS NULL))
) STRICT;
CREATE INDEX decisions_by_path ON decisions (cache, hash_part, id);
CREATE INDEX decisions_by_nar ON decisions (cache, nar_hash, id);

-- NAR files in the local content-addressed store. Rows go on eviction; attestations stay.
CREATE TABLE nar_objects (
    nar_hash    TEXT    NOT NULL PRIMARY KEY,
    nar_size    INTEGER NOT NULL CHECK (nar_size >= 0),
    location    TEXT    NOT NULL,
    verified_at INTEGER NOT NULL,
    last_access INTEGER NOT NULL
) STRICT;
CREATE INDEX nar_objects_by_last_access ON nar_objects (last_access);

-- Things an operator should know about: mismatches, conflicts, upstream failures.
CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    cache      TEXT,
    kind       TEXT    NOT NULL,
    store_path TEXT,
    upstream   TEXT,
    detail     TEXT    NOT NULL,
    at         INTEGER NOT NULL
) STRICT;
CREATE INDEX events_by_cache ON events (cache, kind, id);
CREATE INDEX events_by_kind ON events (kind, id);
