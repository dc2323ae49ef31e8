-- Sandbox settings of a tenant (JSON): limits per invocation and per
-- execution, and the hosts its steps may reach over HTTP. A missing
-- field means the server's default.
ALTER TABLE tenants ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';

-- Named secrets steps read through the SDK. Never journaled, logged or
-- returned by the API.
CREATE TABLE secrets (
    tenant     TEXT NOT NULL REFERENCES tenants (name),
    name       TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
);
