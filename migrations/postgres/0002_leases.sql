-- quorate schema 2 (PostgreSQL). Keep in step with migrations/sqlite/0002_leases.sql.
--
-- Leases: which replica of a replica set does work that must happen once for the whole
-- fleet (a NAR's upstream download, the object store's eviction). Taken with a single
-- INSERT ... ON CONFLICT (no session-held locks: they pin a connection each), renewed while
-- the work runs, and free for another replica once expired (its owner died).
CREATE TABLE leases (
    name       TEXT   NOT NULL PRIMARY KEY, -- 'nar:<nix32 NarHash>', 'evict', ...
    owner      TEXT   NOT NULL,             -- the owner's advertise_url
    token      TEXT   NOT NULL,             -- unique per taking: an old owner cannot renew
    expires_at BIGINT NOT NULL              -- Unix milliseconds
);
