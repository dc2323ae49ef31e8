-- Tenants and API keys. Packages and executions belong to a tenant; what
-- existed before belongs to the tenant `default` (the one local commands
-- use). SQLite cannot change a primary key in place, so packages and
-- executions are rebuilt (inside the migration's transaction).

CREATE TABLE tenants (
    name                TEXT PRIMARY KEY,
    created_at          INTEGER NOT NULL,
    -- Quotas; NULL: the server's default.
    max_package_bytes   INTEGER,
    max_open_executions INTEGER,
    max_payload_bytes   INTEGER
);

INSERT INTO tenants (name, created_at) VALUES ('default', 0);

-- Only a SHA-256 of each key is stored; `id` is the key's public prefix.
CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL REFERENCES tenants (name),
    hash       TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

CREATE INDEX api_keys_tenant ON api_keys (tenant);

-- Content-addressed per tenant: identical bytes are one version.
CREATE TABLE packages_v2 (
    tenant      TEXT NOT NULL REFERENCES tenants (name),
    sha256      TEXT NOT NULL,
    name        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    bytes       BLOB NOT NULL,
    info        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant, sha256),
    UNIQUE (tenant, name, version)
);

INSERT INTO packages_v2 (tenant, sha256, name, version, bytes, info, created_at)
    SELECT 'default', sha256, name, version, bytes, info, created_at FROM packages;

CREATE TABLE executions_v2 (
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
    -- An execution runs a package of its own tenant.
    FOREIGN KEY (tenant, package_sha256) REFERENCES packages_v2 (tenant, sha256),
    UNIQUE (tenant, idempotency_key)
);

INSERT INTO executions_v2 (id, tenant, package_sha256, package_name, package_version, workflow,
        input, idempotency_key, status, result, error, created_at, updated_at, wake_at, owner,
        lease_expires_at, epoch, cancel_requested, signals)
    SELECT id, 'default', package_sha256, package_name, package_version, workflow,
        input, idempotency_key, status, result, error, created_at, updated_at, wake_at, owner,
        lease_expires_at, epoch, cancel_requested, signals
    FROM executions;

DROP TABLE executions;
DROP TABLE packages;
-- Renaming also rewrites the foreign key of executions_v2.
ALTER TABLE packages_v2 RENAME TO packages;
ALTER TABLE executions_v2 RENAME TO executions;

CREATE INDEX executions_due ON executions (status, wake_at);
CREATE INDEX executions_lease ON executions (status, lease_expires_at);
CREATE INDEX executions_owner ON executions (owner);
CREATE INDEX executions_created ON executions (tenant, created_at);
CREATE INDEX executions_open ON executions (tenant, status);
