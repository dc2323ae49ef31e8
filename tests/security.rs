//! A shared server's security (issue 19), end to end with real `cerebelum
//! serve` processes and the real CLI: the audit log of admin actions and
//! of decisions on executions, and the throttle of failed
//! authentications per peer address.

use cerebelum_harness as common;
use common::WAIT;

use cerebelum::api::keys::id_of as key_id;
use cerebelum::api::pb;
use common::{Db, Remote, free_port, guest, path};
use serde_json::Value;
use std::time::Duration;

common::on_both_backends!(
    every_audited_action_is_recorded_with_its_key_and_origin,
    operators_administer_a_server_remotely_and_tenant_keys_cannot
);

/// The audit log's rows (of `tenant`), newest first, from `cerebelum audit`.
fn audit_rows(db: &Db, tenant: Option<&str>) -> Vec<Value> {
    let mut args = vec!["audit", "--json", "--limit", "1000"];
    if let Some(tenant) = tenant {
        args.extend(["--tenant", tenant]);
    }
    db.ok(&args)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn every_audited_action_is_recorded_with_its_key_and_origin(db: Db) {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let cli_actor = format!("cli:{user}");
    let key = db.tenant("acme", &[]);
    db.tenant("other", &[]);
    let port = free_port();
    let _server = db.serve_api(port, &[]);
    let cli = Remote::new(port, &key);
    cli.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
    let waiting = |approval: &str| {
        let input = format!(r#"{{"key":"{approval}"}}"#);
        let id = cli
            .ok(&["start", "kit", "approval", "--input", &input])
            .trim()
            .to_owned();
        cli.wait_text(&["status", &id], WAIT, |s| {
            s.contains(&format!("waiting for approval '{approval}'"))
        });
        id
    };

    // Decisions through the API, each by the key that made it.
    let approved = waiting("ship");
    cli.ok(&["approve", &approved, "ship", "--payload", r#"{"by":"ops"}"#]);
    let rejected = waiting("ship");
    cli.ok(&["reject", &rejected, "ship", "--reason", "not today"]);
    let cancelled = waiting("ship");
    cli.ok(&["cancel", &cancelled]);
    cli.wait_text(&["status", &cancelled], WAIT, |s| s.contains("cancelled"));
    cli.ok(&["retry", &cancelled]);
    // What was refused changed nothing and is not audited.
    cli.fails(&["cancel", "ex_does_not_exist"]);
    cli.fails(&["approve", &approved, "ship"]);

    // Admin actions on the database.
    db.set_secret("acme", "deploy-token", "s3cr3t-value-of-the-token");
    db.ok(&["admin", "secret", "delete", "acme", "deploy-token"]);
    let second = db.key("acme");
    db.ok(&["admin", "key", "revoke", key_id(&second)]);
    db.ok(&[
        "admin",
        "tenant",
        "update",
        "acme",
        "--max-open-executions",
        "50",
    ]);

    let rows = audit_rows(&db, Some("acme"));
    let summary: Vec<(String, String, String)> = rows
        .iter()
        .rev()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_owned(),
                r["target"].as_str().unwrap().to_owned(),
                r["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let by_key = key_id(&key).to_owned();
    let expected: Vec<(String, String, String)> = [
        ("tenant.create", "acme", cli_actor.as_str()),
        ("key.create", key_id(&key), &cli_actor),
        ("execution.approve", &approved, &by_key),
        ("execution.reject", &rejected, &by_key),
        ("execution.cancel", &cancelled, &by_key),
        ("execution.retry", &cancelled, &by_key),
        ("secret.set", "deploy-token", &cli_actor),
        ("secret.delete", "deploy-token", &cli_actor),
        ("key.create", key_id(&second), &cli_actor),
        ("key.revoke", key_id(&second), &cli_actor),
        ("tenant.update", "acme", &cli_actor),
    ]
    .iter()
    .map(|(a, t, k)| (a.to_string(), t.to_string(), k.to_string()))
    .collect();
    assert_eq!(summary, expected, "{rows:#?}");
    for row in &rows {
        assert_eq!(row["tenant"], "acme");
        let origin = row["origin"].as_str().unwrap();
        if row["actor"] == by_key {
            assert!(origin.starts_with("127.0.0.1:"), "the peer: {row}");
        } else {
            assert_eq!(origin, "local", "{row}");
        }
        assert!(row["at_ms"].as_i64().unwrap() > 1_700_000_000_000, "{row}");
    }
    let approval = rows
        .iter()
        .find(|r| r["action"] == "execution.approve")
        .unwrap();
    assert_eq!(approval["detail"]["key"], "ship");
    assert!(
        !rows.iter().any(|r| r.to_string().contains("s3cr3t")),
        "a secret's value never reaches the audit log"
    );
    // The whole log also has the other tenant; newest first.
    let all = audit_rows(&db, None);
    assert!(all.iter().any(|r| r["tenant"] == "other"));
    let ids: Vec<i64> = all.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    // Paging back: only older rows.
    let older = db.ok(&["audit", "--json", "--before", &ids[2].to_string()]);
    assert_eq!(older.lines().count(), ids.len() - 3);

    // Append-only: the database refuses to change or delete a row.
    for statement in [
        "UPDATE audit_log SET actor = 'someone-else'",
        "DELETE FROM audit_log",
    ] {
        let refused = db.try_sql(statement).expect_err(statement);
        assert!(refused.contains("append-only"), "{statement}: {refused}");
    }
    assert_eq!(audit_rows(&db, None).len(), all.len());

    // Clear errors.
    let unknown = db.fails(&["audit", "--tenant", "nobody"]);
    assert!(unknown.contains("no tenant named 'nobody'"), "{unknown}");
    // A tenant's key cannot read the log through the server.
    let remote = cli.fails(&["audit"]);
    assert!(remote.contains("takes operator keys"), "{remote}");
}

#[test]
fn failed_authentications_from_one_address_are_throttled_on_grpc_and_the_console() {
    let db = Db::new();
    let key = db.tenant("acme", &[]);
    let port = free_port();
    let mut server = db.serve_api(port, &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let metric = |port| {
        let page = common::http_request(port, "GET", "/metrics", &[], "");
        page.body
            .lines()
            .find_map(|l| l.strip_prefix("cerebelum_auth_failures_total "))
            .map(|v| v.trim().parse::<f64>().unwrap())
            .unwrap_or_else(|| panic!("no auth_failures metric in {}", page.body))
    };
    let before = metric(port);
    runtime.block_on(async {
        // A valid key works, and keeps working while nobody guesses.
        let mut good = common::grpc::connect(port, &key).await;
        good.list_packages(pb::ListPackagesRequest::default())
            .await
            .expect("a valid key is accepted");
        let last = if key.ends_with('0') { '1' } else { '0' };
        let guess = format!("{}{last}", &key[..key.len() - 1]);
        let mut wrong = common::grpc::connect(port, &guess).await;
        for i in 0..20 {
            let refused = wrong
                .list_packages(pb::ListPackagesRequest::default())
                .await
                .expect_err("a wrong key");
            assert_eq!(refused.code(), tonic::Code::Unauthenticated, "attempt {i}");
            assert!(
                refused.message().contains("invalid or revoked API key"),
                "attempt {i}: {}",
                refused.message()
            );
        }
        // Now even the right key is refused from this address, at once.
        let refused = good
            .list_packages(pb::ListPackagesRequest::default())
            .await
            .expect_err("throttled");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert!(
            refused
                .message()
                .contains("too many failed authentications from this address"),
            "{}",
            refused.message()
        );
    });
    // The console's sign-in shares the throttle.
    let body = format!("key={key}");
    let login = common::http_request(
        port,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &body,
    );
    assert_eq!(login.status, 429, "{}", login.body);
    assert!(login.body.contains("too many failed authentications"));
    assert_eq!(metric(port) - before, 22.0, "20 wrong keys and 2 throttled");
    // The log names the address, never the key presented.
    let log = server.log();
    assert!(log.contains("failed authentication"), "{log}");
    assert!(log.contains("127.0.0.1"), "{log}");
    assert!(
        !log.contains(&key[13..]),
        "a key's secret part is never logged"
    );
}

#[test]
fn an_expired_key_is_refused_and_key_list_shows_expiry_and_last_use() {
    let db = Db::new();
    let lasting = db.tenant("acme", &[]);
    let short = db
        .ok(&["admin", "key", "create", "acme", "--expires-in", "8s"])
        .trim()
        .to_owned();
    let created = std::time::Instant::now();
    let bad = db.fails(&["admin", "key", "create", "acme", "--expires-in", "3 weeks"]);
    assert!(bad.contains("invalid duration"), "{bad}");
    let port = free_port();
    let _server = db.serve_api(port, &[]);
    Remote::new(port, &short).ok(&["packages"]);
    Remote::new(port, &lasting).ok(&["packages"]);
    // The use is recorded in the background, within moments.
    let line = |listed: &str, key: &str| {
        listed
            .lines()
            .find(|l| l.starts_with(key_id(key)))
            .unwrap_or_else(|| panic!("{key} in {listed}"))
            .to_owned()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (short_line, lasting_line) = loop {
        let listed = db.ok(&["admin", "key", "list", "acme"]);
        let (s, l) = (line(&listed, &short), line(&listed, &lasting));
        if !l.ends_with("never") && !s.ends_with("never") {
            break (s, l);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no last use recorded: {listed}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(short_line.contains("active"), "{short_line}");
    assert!(
        !short_line.contains("never"),
        "it expires and was used: {short_line}"
    );
    assert!(
        lasting_line.contains("never"),
        "it never expires: {lasting_line}"
    );
    std::thread::sleep(Duration::from_secs(8).saturating_sub(created.elapsed()));
    let refused = Remote::new(port, &short).fails(&["packages"]);
    assert!(
        refused.contains("invalid or revoked API key (or it has expired)"),
        "{refused}"
    );
    Remote::new(port, &lasting).ok(&["packages"]);
    let listed = db.ok(&["admin", "key", "list", "acme"]);
    assert!(line(&listed, &short).contains("expired"), "{listed}");
}

/// The stored values of the `secrets` table, read from the database file.
fn stored_secrets(db: &Db) -> Vec<(String, String)> {
    const ROWS: &str = "SELECT name, value FROM secrets ORDER BY name";
    let url = db.url.clone();
    let path = db.path.clone();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            if url.starts_with("postgres") {
                let pool = sqlx::PgPool::connect(&url).await.unwrap();
                let rows = sqlx::query_as(ROWS).fetch_all(&pool).await.unwrap();
                pool.close().await;
                return rows;
            }
            let url = format!("sqlite://{}", path.display());
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            let rows = sqlx::query_as(ROWS).fetch_all(&pool).await.unwrap();
            pool.close().await;
            rows
        })
}

/// Whether `needle` is anywhere in the bytes of the SQLite database
/// (its file, write-ahead log and shared memory).
fn file_holds(db: &Db, needle: &str) -> bool {
    ["", "-wal", "-shm"].iter().any(|suffix| {
        let mut path = db.path.clone().into_os_string();
        path.push(suffix);
        std::fs::read(&path)
            .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
    })
}

const SECRET: &str = "tok-3f9a-very-secret-value";

/// Runs `leak_secret` (the step reads the secret and returns it, which
/// the engine redacts) through a server on `db` started with `flags`:
/// the status once it ended, or the error of a start the server refused
/// (a tenant whose secrets it cannot open runs nothing: its sandbox
/// settings include them).
fn leak(db: &Db, key: &str, flags: &[&str]) -> Result<Value, String> {
    let port = free_port();
    let mut args = vec!["--engine-retry-ms", "50"];
    args.extend_from_slice(flags);
    let _server = db.serve_api(port, &args);
    let cli = Remote::new(port, key);
    cli.ok(&["upload", path(&guest("hostile")), "--name", "hostile"]);
    let input = r#"{"secret":"api-token"}"#;
    let started = cli.run(&["start", "hostile", "leak_secret", "--input", input]);
    if !started.status.success() {
        return Err(String::from_utf8_lossy(&started.stderr).into_owned());
    }
    let id = String::from_utf8(started.stdout).unwrap().trim().to_owned();
    let status = cli.wait_text(&["status", &id, "--json"], WAIT, |s| {
        s.contains("\"completed\"")
    });
    Ok(serde_json::from_str(&status).unwrap())
}

#[test]
fn secrets_are_sealed_at_rest_and_move_to_a_new_master_key() {
    let db = Db::new();
    let key = db.tenant("acme", &[]);
    db.set_secret("acme", "api-token", SECRET);
    let default_key = db.dir.path().join("cerebelum.db.master-key");
    assert!(default_key.exists(), "the first secret made the master key");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&default_key).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "readable by its owner only");
    let first = cerebelum::secrets::MasterKey::read(&default_key).unwrap();
    let stored = stored_secrets(&db);
    assert_eq!(stored.len(), 1);
    assert!(
        stored[0]
            .1
            .starts_with(&format!("sealed:v1:{}:", first.id())),
        "{stored:?}"
    );
    assert!(
        !file_holds(&db, SECRET),
        "the secret is in the database's bytes"
    );

    // The engine opens it with the key beside the database.
    let ran = leak(&db, &key, &[]).unwrap();
    assert_eq!(ran["result"]["length"], SECRET.len(), "{ran}");

    // A copy of the database without the master key reveals nothing and
    // runs nothing that needs a secret: it says which key it needs.
    let copy = Db::new();
    for suffix in ["", "-wal", "-shm"] {
        let from = format!("{}{suffix}", db.path.display());
        if std::path::Path::new(&from).exists() {
            std::fs::copy(&from, format!("{}{suffix}", copy.path.display())).unwrap();
        }
    }
    let refused = leak(&copy, &key, &[]).unwrap_err();
    assert!(refused.contains("no master key was given"), "{refused}");
    assert!(refused.contains(first.id()), "{refused}");

    // Rotation: every secret moves to the new key; running it again
    // changes nothing; the old key no longer opens them.
    let new_key = db.dir.path().join("new.master-key");
    let created = db.ok(&["admin", "master-key", "create", path(&new_key)]);
    let second = cerebelum::secrets::MasterKey::read(&new_key).unwrap();
    assert!(created.contains(second.id()), "{created}");
    let again = db.fails(&["admin", "master-key", "create", path(&new_key)]);
    assert!(again.contains("exists"), "never overwrites a key: {again}");
    let rotated = db.ok(&["admin", "master-key", "rotate", "--new", path(&new_key)]);
    assert!(rotated.contains("re-sealed 1 secret"), "{rotated}");
    let stored = stored_secrets(&db);
    assert!(
        stored[0]
            .1
            .starts_with(&format!("sealed:v1:{}:", second.id())),
        "{stored:?}"
    );
    let rerun = db.ok(&["admin", "master-key", "rotate", "--new", path(&new_key)]);
    assert!(rerun.contains("re-sealed 0 secret"), "{rerun}");
    let ran = leak(&db, &key, &["--master-key-file", path(&new_key)]).unwrap();
    assert_eq!(ran["result"]["length"], SECRET.len(), "{ran}");
    let wrong = leak(&db, &key, &[]).unwrap_err();
    assert!(wrong.contains("not by the one given"), "{wrong}");
    assert!(wrong.contains(second.id()), "{wrong}");
    let audit = audit_rows(&db, None);
    assert_eq!(audit[0]["action"], "master_key.rotate", "{audit:?}");
    assert!(!audit.iter().any(|r| r.to_string().contains(SECRET)));
}

#[test]
fn on_postgresql_setting_a_secret_needs_a_master_key() {
    let db = Db::postgres();
    db.tenant("acme", &[]);
    let out = db
        .command(&["admin", "secret", "set", "acme", "api-token"])
        .env_remove("CEREBELUM_MASTER_KEY_FILE")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--master-key-file"), "{stderr}");
    // With the key every command of this database gets: sealed.
    db.set_secret("acme", "api-token", SECRET);
    let listed = db.ok(&["admin", "secret", "list", "acme"]);
    assert_eq!(listed.trim(), "api-token");
}

/// `cerebelum admin` with stdin `input`, as `cli`'s key on its server.
fn admin_with_input(cli: &Remote, args: &[&str], input: &str) -> std::process::Output {
    common::with_stdin(cli.command(args), input)
}

fn operators_administer_a_server_remotely_and_tenant_keys_cannot(db: Db) {
    let tenant_key = db.tenant("acme", &[]);
    // A secret set on the database gives it a master key (SQLite: the
    // default file beside it; PostgreSQL: the harness's), which the server
    // then seals remote secrets with.
    db.set_secret("acme", "seed", "seed-value-123");
    let operator_key = db
        .ok(&["admin", "key", "create", "--operator"])
        .trim()
        .to_owned();
    let port = free_port();
    let _server = db.serve_api(port, &[]);
    let op = Remote::new(port, &operator_key);

    // Tenants.
    let created = op.ok(&[
        "admin",
        "tenant",
        "create",
        "beta",
        "--max-open-executions",
        "7",
        "--allow-http",
        "api.example.com",
    ]);
    assert!(created.contains("created tenant beta"), "{created}");
    assert!(created.contains("max open executions 7"), "{created}");
    let updated = op.ok(&["admin", "tenant", "update", "beta", "--memory-mb", "32"]);
    assert!(
        updated.contains("memory 32 MiB") && updated.contains("max open executions 7"),
        "the update keeps what it does not set: {updated}"
    );
    assert!(updated.contains("api.example.com"), "{updated}");
    let listed = op.ok(&["admin", "tenant", "list"]);
    assert!(
        listed.contains("acme") && listed.contains("beta"),
        "{listed}"
    );
    let bad = op.fails(&[
        "admin",
        "tenant",
        "create",
        "gamma",
        "--allow-http",
        "http://x/",
    ]);
    assert!(bad.contains("(server: InvalidArgument)"), "{bad}");
    let dup = op.fails(&["admin", "tenant", "create", "beta"]);
    assert!(dup.contains("beta"), "{dup}");

    // Keys: made remotely, usable at once, listed, revoked at once.
    let beta_key = op
        .ok(&["admin", "key", "create", "beta", "--expires-in", "1h"])
        .trim()
        .to_owned();
    let beta = Remote::new(port, &beta_key);
    beta.ok(&["packages"]);
    let keys = op.ok(&["admin", "key", "list", "beta"]);
    assert!(
        keys.contains(key_id(&beta_key)) && keys.contains("active"),
        "{keys}"
    );
    assert!(!keys.contains("never  "), "the expiry is shown: {keys}");
    let operators = op.ok(&["admin", "key", "list", "--operator"]);
    assert!(operators.contains(key_id(&operator_key)), "{operators}");
    op.ok(&["admin", "key", "revoke", key_id(&beta_key)]);
    assert!(beta.fails(&["packages"]).contains("invalid or revoked"));

    // Secrets: sealed by the server's master key, names only in lists.
    let set = admin_with_input(
        &op,
        &["admin", "secret", "set", "beta", "api-token"],
        "remote-secret-value\n",
    );
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    assert_eq!(
        op.ok(&["admin", "secret", "list", "beta"]).trim(),
        "api-token"
    );
    let sealed = stored_secrets(&db);
    let (_, value) = sealed.iter().find(|(name, _)| name == "api-token").unwrap();
    assert!(value.starts_with("sealed:v1:"), "{value}");
    let short = admin_with_input(&op, &["admin", "secret", "set", "beta", "x"], "short");
    assert!(!short.status.success());
    op.ok(&["admin", "secret", "delete", "beta", "api-token"]);
    assert_eq!(op.ok(&["admin", "secret", "list", "beta"]).trim(), "");

    // The audit log names the operator key and where it called from.
    let audit = op.ok(&["audit", "--tenant", "beta", "--json"]);
    let rows: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<&str> = rows
        .iter()
        .rev()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "tenant.create",
            "tenant.update",
            "key.create",
            "key.revoke",
            "secret.set",
            "secret.delete"
        ],
        "{audit}"
    );
    for row in &rows {
        assert_eq!(row["actor"], key_id(&operator_key), "{row}");
        assert!(
            row["origin"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{row}"
        );
    }
    // The master key's commands stay where the files are.
    let rotate = op.fails(&["admin", "master-key", "rotate", "--new", "x"]);
    assert!(rotate.contains("where the server runs"), "{rotate}");

    // A tenant's key on every admin RPC: PERMISSION_DENIED, nothing done.
    let tenant = || async { common::grpc::admin(port, &tenant_key).await };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let codes = rt.block_on(async {
        let name = || "acme".to_owned();
        vec![
            (
                "CreateTenant",
                tenant()
                    .await
                    .create_tenant(pb::CreateTenantRequest {
                        name: "evil".into(),
                        ..Default::default()
                    })
                    .await
                    .err(),
            ),
            (
                "UpdateTenant",
                tenant()
                    .await
                    .update_tenant(pb::UpdateTenantRequest {
                        name: name(),
                        ..Default::default()
                    })
                    .await
                    .err(),
            ),
            (
                "ListTenants",
                tenant()
                    .await
                    .list_tenants(pb::ListTenantsRequest {})
                    .await
                    .err(),
            ),
            (
                "CreateKey",
                tenant()
                    .await
                    .create_key(pb::CreateKeyRequest {
                        operator: true,
                        ..Default::default()
                    })
                    .await
                    .err(),
            ),
            (
                "ListKeys",
                tenant()
                    .await
                    .list_keys(pb::ListKeysRequest {
                        tenant: name(),
                        ..Default::default()
                    })
                    .await
                    .err(),
            ),
            (
                "RevokeKey",
                tenant()
                    .await
                    .revoke_key(pb::RevokeKeyRequest {
                        id: key_id(&operator_key).into(),
                    })
                    .await
                    .err(),
            ),
            (
                "SetSecret",
                tenant()
                    .await
                    .set_secret(pb::SetSecretRequest {
                        tenant: name(),
                        name: "x".into(),
                        value: "0123456789".into(),
                    })
                    .await
                    .err(),
            ),
            (
                "ListSecrets",
                tenant()
                    .await
                    .list_secrets(pb::ListSecretsRequest { tenant: name() })
                    .await
                    .err(),
            ),
            (
                "DeleteSecret",
                tenant()
                    .await
                    .delete_secret(pb::DeleteSecretRequest {
                        tenant: name(),
                        name: "seed".into(),
                    })
                    .await
                    .err(),
            ),
            (
                "ListAudit",
                tenant()
                    .await
                    .list_audit(pb::ListAuditRequest::default())
                    .await
                    .err(),
            ),
        ]
    });
    assert_eq!(codes.len(), 10, "every RPC of the Admin service");
    for (rpc, refused) in codes {
        let status = refused.unwrap_or_else(|| panic!("{rpc} with a tenant's key was answered"));
        assert_eq!(
            status.code(),
            tonic::Code::PermissionDenied,
            "{rpc}: {status:?}"
        );
        assert!(
            status.message().contains("operator key"),
            "{rpc}: {status:?}"
        );
    }
    // Nothing of it happened.
    assert!(!op.ok(&["admin", "tenant", "list"]).contains("evil"));
    assert_eq!(op.ok(&["admin", "secret", "list", "acme"]).trim(), "seed");
    op.ok(&["admin", "key", "list", "--operator"]);
    Remote::new(port, &operator_key).ok(&["admin", "tenant", "list"]);
    // The tenant's own API still works with its key; an operator key is
    // not a tenant's.
    Remote::new(port, &tenant_key).ok(&["packages"]);
    let crossed = op.fails(&["packages"]);
    assert!(crossed.contains("(server: PermissionDenied)"), "{crossed}");
    // No key at all: UNAUTHENTICATED.
    let anonymous = Remote::new(port, "").fails(&["admin", "tenant", "list"]);
    assert!(anonymous.contains("missing API key"), "{anonymous}");
    // CLI-made tenant keys keep working from the database too (no server).
    assert!(db.ok(&["admin", "tenant", "list"]).contains("beta"));
}
