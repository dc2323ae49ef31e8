-- Tenants and API keys. Packages and executions belong to a tenant; what
-- existed before belongs to the tenant `default` (the one local commands
-- use).

CREATE TABLE tenants (
    name                TEXT PRIMARY KEY,
    created_at          BIGINT NOT NULL,
    -- Quotas; NULL: the server's default.
    max_package_bytes   BIGINT,
    max_open_executions BIGINT,
    max_payload_bytes   BIGINT
);

INSERT INTO tenants (name, created_at) VALUES ('default', 0);

-- Only a SHA-256 of each key is stored; `id` is the key's public prefix.
CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL REFERENCES tenants (name),
    hash       TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE INDEX api_keys_tenant ON api_keys (tenant);

ALTER TABLE executions DROP CONSTRAINT executions_package_sha256_fkey;
ALTER TABLE executions DROP CONSTRAINT executions_idempotency_key_key;

-- Content-addressed per tenant: identical bytes are one version.
ALTER TABLE packages ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default' REFERENCES tenants (name);
ALTER TABLE packages ALTER COLUMN tenant DROP DEFAULT;
ALTER TABLE packages DROP CONSTRAINT packages_pkey;
ALTER TABLE packages ADD PRIMARY KEY (tenant, sha256);
ALTER TABLE packages DROP CONSTRAINT packages_name_version_key;
ALTER TABLE packages ADD UNIQUE (tenant, name, version);

ALTER TABLE executions ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE executions ALTER COLUMN tenant DROP DEFAULT;
-- An execution runs a package of its own tenant.
ALTER TABLE executions ADD FOREIGN KEY (tenant, package_sha256) REFERENCES packages (tenant, sha256);
ALTER TABLE executions ADD UNIQUE (tenant, idempotency_key);

DROP INDEX executions_created;
CREATE INDEX executions_created ON executions (tenant, created_at);
CREATE INDEX executions_open ON executions (tenant) WHERE status IN ('pending', 'running', 'waiting');
