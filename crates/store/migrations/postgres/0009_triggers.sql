-- HTTP triggers (issue 18): `POST /t/<tenant>/<name>` starts a workflow of
-- the tenant with the request's JSON body as input. A request is
-- authenticated by an HMAC-SHA256 signature of its body with one of the
-- tenant's secrets (`hmac_secret`, GitHub's `X-Hub-Signature-256`), or by a
-- token whose SHA-256 is `token_hash`.
CREATE TABLE triggers (
    tenant       TEXT NOT NULL,
    name         TEXT NOT NULL,
    package      TEXT NOT NULL,
    -- NULL: the package's newest version at each request.
    version      BIGINT,
    workflow     TEXT NOT NULL,
    hmac_secret  TEXT,
    token_hash   TEXT,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant, name)
);
