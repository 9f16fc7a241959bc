-- quorate schema 3 (SQLite). Keep in step with migrations/postgres/0003_tlog.sql.
--
-- The transparency log, one per cache (DESIGN §12): every attestation and decision row is
-- appended to its cache's Merkle log by one appender at a time (the `tlog:<cache>` lease);
-- a row's tlog_index is NULL until then. The log itself: its entries, the stored hashes of
-- its tree (Go tlog's stored-hash numbering: enough to answer any proof and build any tile
-- without the leaves), and its signed checkpoints.
ALTER TABLE attestations ADD COLUMN tlog_index INTEGER;
ALTER TABLE decisions ADD COLUMN tlog_index INTEGER;
-- The text a signature covers when the content does not determine it (Guix signs its
-- narinfo up to the Signature line, URLs included); NULL for Nix, whose fingerprint is rebuilt
-- from the content. Logged with the attestation so an auditor can verify it again.
ALTER TABLE attestations ADD COLUMN signed_body TEXT;
CREATE INDEX attestations_unlogged ON attestations (cache, id) WHERE tlog_index IS NULL;
CREATE INDEX decisions_unlogged ON decisions (cache, id) WHERE tlog_index IS NULL;

CREATE TABLE tlog_entries (
    cache TEXT   NOT NULL,
    idx   INTEGER NOT NULL CHECK (idx >= 0),
    kind  TEXT   NOT NULL CHECK (kind IN ('attestation', 'decision', 'policy')),
    body  BLOB   NOT NULL, -- the canonical entry text, as hashed into the leaf
    PRIMARY KEY (cache, idx)
) STRICT;

CREATE TABLE tlog_hashes (
    cache        TEXT   NOT NULL,
    stored_index INTEGER NOT NULL CHECK (stored_index >= 0),
    hash         BLOB   NOT NULL,
    PRIMARY KEY (cache, stored_index)
) STRICT;

CREATE TABLE tlog_checkpoints (
    cache     TEXT   NOT NULL,
    size      INTEGER NOT NULL CHECK (size >= 0),
    note      TEXT   NOT NULL, -- the signed checkpoint (C2SP signed-note)
    signed_at INTEGER NOT NULL,
    PRIMARY KEY (cache, size)
) STRICT;

-- Policies logged, by the SHA-256 of their entry: a policy is logged when it changes.
CREATE TABLE tlog_policies (
    cache      TEXT   NOT NULL,
    entry_hash TEXT   NOT NULL,
    tlog_index INTEGER NOT NULL,
    PRIMARY KEY (cache, entry_hash)
) STRICT;

-- Witness cosignatures of this quorate's checkpoints, served with the checkpoint.
CREATE TABLE tlog_cosignatures (
    cache   TEXT   NOT NULL,
    size    INTEGER NOT NULL CHECK (size >= 0),
    witness TEXT   NOT NULL, -- the witness's name
    line    TEXT   NOT NULL, -- its signature line, as the witness sent it
    PRIMARY KEY (cache, size, witness)
) STRICT;

-- As a witness: the latest checkpoint cosigned per log (origin). Only ever moves forward,
-- along a consistency proof.
CREATE TABLE witness_checkpoints (
    origin     TEXT   NOT NULL PRIMARY KEY,
    size       INTEGER NOT NULL CHECK (size >= 0),
    note       TEXT   NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

-- Signed bodies too large to sit in their attestation's entry (which then names them by
-- SHA-256), served beside the log at /tlog/<cache>/signed/<sha256 hex>.
CREATE TABLE tlog_signed (
    cache  TEXT NOT NULL,
    sha256 TEXT NOT NULL, -- lowercase hex
    body   BLOB NOT NULL,
    PRIMARY KEY (cache, sha256)
) STRICT;

-- Peers' logs this quorate follows (`[[cache.peer]]`, DESIGN §13): the verifier key (configured,
-- or kept from first contact), the latest checkpoint proved consistent with the ones before,
-- how many of its entries were read, and, once two of its checkpoints were found on
-- different histories, when and both checkpoints: a forked peer is no longer followed.
CREATE TABLE tlog_peers (
    cache      TEXT   NOT NULL,
    url        TEXT   NOT NULL,
    vkey       TEXT   NOT NULL,
    checkpoint TEXT,
    size       INTEGER NOT NULL DEFAULT 0 CHECK (size >= 0),
    imported   INTEGER NOT NULL DEFAULT 0 CHECK (imported >= 0),
    forked_at  INTEGER,
    detail     TEXT,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (cache, url)
) STRICT;
