-- A package version is named by (tenant, name, version), whatever its
-- bytes: the same bytes may be two packages. The bytes are stored once,
-- by sha256, in package_blobs. Executions refer to the version they run.
--
-- Executions also count the engine failures (not failures of user code:
-- a database or runtime error) since they last made progress, with the
-- last one's message, so such an error is retried with a growing delay,
-- shown by `status`, and ends the execution after a bound.
--
-- SQLite cannot change keys in place: both tables are rebuilt.

CREATE TABLE package_blobs (
    sha256 TEXT PRIMARY KEY,
    bytes  BLOB NOT NULL
);

INSERT OR IGNORE INTO package_blobs (sha256, bytes) SELECT sha256, bytes FROM packages;

CREATE TABLE packages_v4 (
    tenant      TEXT NOT NULL REFERENCES tenants (name),
    name        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    sha256      TEXT NOT NULL REFERENCES package_blobs (sha256),
    size        INTEGER NOT NULL,
    info        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant, name, version)
);

INSERT INTO packages_v4 (tenant, name, version, sha256, size, info, created_at)
    SELECT tenant, name, version, sha256, length(bytes), info, created_at FROM packages;

CREATE TABLE executions_v4 (
    id               TEXT PRIMARY KEY,
    tenant           TEXT NOT NULL,
    package_sha256   TEXT NOT NULL,
    package_name     TEXT NOT NULL,
    package_version  INTEGER NOT NULL,
    workflow         TEXT NOT NULL,
    input            TEXT NOT NULL,
    idempotency_key  TEXT,
    status           TEXT NOT NULL,
    result           TEXT,
    error            TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    wake_at          INTEGER,
    owner            TEXT,
    lease_expires_at INTEGER,
    epoch            INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    signals          INTEGER NOT NULL DEFAULT 0,
    engine_failures  INTEGER NOT NULL DEFAULT 0,
    engine_error     TEXT,
    FOREIGN KEY (tenant, package_name, package_version)
        REFERENCES packages_v4 (tenant, name, version),
    UNIQUE (tenant, idempotency_key)
);

INSERT INTO executions_v4 (id, tenant, package_sha256, package_name, package_version, workflow,
        input, idempotency_key, status, result, error, created_at, updated_at, wake_at, owner,
        lease_expires_at, epoch, cancel_requested, signals)
    SELECT id, tenant, package_sha256, package_name, package_version, workflow,
        input, idempotency_key, status, result, error, created_at, updated_at, wake_at, owner,
        lease_expires_at, epoch, cancel_requested, signals
    FROM executions;

DROP TABLE executions;
DROP TABLE packages;
-- Renaming also rewrites the foreign key of executions_v4.
ALTER TABLE packages_v4 RENAME TO packages;
ALTER TABLE executions_v4 RENAME TO executions;

CREATE INDEX packages_sha256 ON packages (tenant, sha256);
CREATE INDEX executions_due ON executions (status, wake_at);
CREATE INDEX executions_lease ON executions (status, lease_expires_at);
CREATE INDEX executions_owner ON executions (owner);
CREATE INDEX executions_created ON executions (tenant, created_at);
CREATE INDEX executions_open ON executions (tenant, status);
