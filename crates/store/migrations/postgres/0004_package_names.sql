-- A package version is named by (tenant, name, version), whatever its
-- bytes: the same bytes may be two packages. The bytes are stored once,
-- by sha256, in package_blobs. Executions refer to the version they run.
--
-- Executions also count the engine failures (not failures of user code:
-- a database or runtime error) since they last made progress, with the
-- last one's message, so such an error is retried with a growing delay,
-- shown by `status`, and ends the execution after a bound.

CREATE TABLE package_blobs (
    sha256 TEXT PRIMARY KEY,
    bytes  BYTEA NOT NULL
);

INSERT INTO package_blobs (sha256, bytes)
    SELECT DISTINCT ON (sha256) sha256, bytes FROM packages ORDER BY sha256;

-- Whatever the foreign keys from executions to packages are called.
DO $$
DECLARE c text;
BEGIN
    FOR c IN SELECT conname FROM pg_constraint
             WHERE conrelid = 'executions'::regclass AND contype = 'f' LOOP
        EXECUTE format('ALTER TABLE executions DROP CONSTRAINT %I', c);
    END LOOP;
END $$;

ALTER TABLE packages ADD COLUMN size BIGINT;
UPDATE packages SET size = length(bytes);
ALTER TABLE packages ALTER COLUMN size SET NOT NULL;
ALTER TABLE packages DROP COLUMN bytes;
ALTER TABLE packages DROP CONSTRAINT packages_pkey;
ALTER TABLE packages DROP CONSTRAINT packages_tenant_name_version_key;
ALTER TABLE packages ADD PRIMARY KEY (tenant, name, version);
ALTER TABLE packages ADD FOREIGN KEY (sha256) REFERENCES package_blobs (sha256);
CREATE INDEX packages_sha256 ON packages (tenant, sha256);

ALTER TABLE executions ADD FOREIGN KEY (tenant, package_name, package_version)
    REFERENCES packages (tenant, name, version);
ALTER TABLE executions ADD COLUMN engine_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE executions ADD COLUMN engine_error TEXT;
