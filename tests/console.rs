//! The web console of a real `cerebelum serve`, driven in a real headless
//! Chromium through chromedriver (WebDriver, with `fantoccini`): sign-in,
//! approvals with a payload, live updates, cancel, retry, upload and start;
//! and over plain HTTP, every route of the console with another tenant's
//! ids (404) and state-changing requests without the session's token.
//!
//! Chromium and chromedriver are Debian's `chromium` and
//! `chromium-driver`; `scripts/test.sh` installs them when missing.

use cerebelum_harness as common;
use common::WAIT;

use common::{Db, Remote, free_port, guest, http_request, path, root};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// ------------------------------------------------------------- plain HTTP

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

/// Signs in over HTTP: the `Cookie` header of the session and its CSRF token.
fn sign_in(port: u16, key: &str) -> (String, String) {
    let reply = http_request(port, "POST", "/login", &[FORM], &format!("key={key}"));
    assert_eq!(reply.status, 303, "{}\n{}", reply.head, reply.body);
    let cookie = reply
        .head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap_or_else(|| panic!("no cookie: {}", reply.head));
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let page = http_request(port, "GET", "/tenant", &[("Cookie", &cookie)], "");
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = page
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF token in the page")
        .to_owned();
    (cookie, csrf)
}

fn started(cli: &Remote, workflow: &str, input: Value) -> String {
    cli.ok(&["start", "kit", workflow, "--input", &input.to_string()])
        .trim()
        .to_owned()
}

fn wait_status(cli: &Remote, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = cli.status(id);
        if s["status"] == status {
            return s;
        }
        assert!(Instant::now() < deadline, "{id} is not {status}: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_route_hides_other_tenants_and_refuses_forged_requests() {
    let db = Db::new();
    let acme_key = db.tenant("acme", &[]);
    let other_key = db.tenant("other", &[]);
    let port = free_port();
    let _server = db.serve_api(port, &[]);
    let other = Remote::new(port, &other_key);
    other.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
    let theirs = started(&other, "approval", json!({"key": "ship"}));
    wait_status(&other, &theirs, "waiting");
    let their_key_id = other_key[..12].to_owned();

    // Not signed in: every page sends to the sign-in page.
    for path in [
        "/",
        "/executions",
        &format!("/executions/{theirs}"),
        "/packages",
        "/tenant",
    ] {
        let reply = http_request(port, "GET", path, &[], "");
        assert_eq!(reply.status, 303, "{path}: {}", reply.head);
        assert!(
            reply.head.contains("location: /login"),
            "{path}: {}",
            reply.head
        );
    }
    // A wrong key is refused, and makes no session.
    let wrong = http_request(port, "POST", "/login", &[FORM], "key=cbk_00000000_nope");
    assert_eq!(wrong.status, 401);
    assert!(
        wrong.body.contains("invalid or revoked API key"),
        "{}",
        wrong.body
    );
    assert!(!wrong.head.contains("set-cookie"), "{}", wrong.head);

    let (cookie, csrf) = sign_in(port, &acme_key);
    let auth = [("Cookie", cookie.as_str()), FORM];
    // Every route, with the other tenant's execution, package and key: 404.
    for path in [
        format!("/executions/{theirs}"),
        format!("/executions/{theirs}/live"),
        "/packages/kit".to_owned(),
    ] {
        let reply = http_request(port, "GET", &path, &auth, "");
        assert_eq!(reply.status, 404, "GET {path}: {}", reply.body);
    }
    for (path, form) in [
        ("approve", format!("csrf={csrf}&key=ship&payload=%7B%7D")),
        ("reject", format!("csrf={csrf}&key=ship&reason=no")),
        ("cancel", format!("csrf={csrf}")),
        ("retry", format!("csrf={csrf}")),
        ("signal", format!("csrf={csrf}&name=go&payload=%7B%7D")),
        ("pause", format!("csrf={csrf}")),
        ("resume", format!("csrf={csrf}")),
    ] {
        let path = format!("/executions/{theirs}/{path}");
        let reply = http_request(port, "POST", &path, &auth, &form);
        assert_eq!(reply.status, 404, "POST {path}: {}", reply.body);
        assert!(
            reply
                .body
                .contains(&format!("no execution with id '{theirs}'")),
            "the same answer as for a missing one: {}",
            reply.body
        );
    }
    let reply = http_request(
        port,
        "POST",
        &format!("/tenant/keys/{their_key_id}/revoke"),
        &auth,
        &format!("csrf={csrf}"),
    );
    assert_eq!(reply.status, 404, "{}", reply.body);
    let start = http_request(
        port,
        "POST",
        "/start",
        &auth,
        &format!("csrf={csrf}&package=kit&workflow=noop3&input=%7B%7D"),
    );
    assert_eq!(start.status, 404, "{}", start.body);
    // The listing shows none of theirs, even searched by id.
    let list = http_request(
        port,
        "GET",
        &format!("/executions?q={}", &theirs[..8]),
        &auth,
        "",
    );
    assert_eq!(list.status, 200);
    assert!(!list.body.contains(&theirs), "{}", list.body);
    assert!(list.body.contains("No executions match"), "{}", list.body);
    // Nor the rows the list refreshes itself with, nor a list that names
    // the other tenant or their package: a tenant's filter is its own.
    for path in [
        format!("/executions/rows?q={}", &theirs[..8]),
        "/executions?tenant=other".to_owned(),
        "/executions/rows?tenant=other".to_owned(),
        "/executions?package=kit&tenant=other".to_owned(),
    ] {
        let reply = http_request(port, "GET", &path, &auth, "");
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.body);
        assert!(!reply.body.contains(&theirs), "GET {path}: {}", reply.body);
    }
    // Nothing happened to theirs, and their key still works.
    assert_eq!(other.status(&theirs)["status"], "waiting");

    // State-changing requests without the session's token, or from
    // another site, are refused and change nothing.
    let mine = {
        let acme = Remote::new(port, &acme_key);
        acme.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
        let id = started(&acme, "approval", json!({"key": "go"}));
        wait_status(&acme, &id, "waiting");
        id
    };
    let cancel = format!("/executions/{mine}/cancel");
    for (headers, form) in [
        (vec![auth[0], FORM], "csrf=".to_owned()),
        (vec![auth[0], FORM], "csrf=0123".to_owned()),
        (vec![auth[0], FORM], String::new()),
        (
            vec![auth[0], FORM, ("Sec-Fetch-Site", "cross-site")],
            format!("csrf={csrf}"),
        ),
        (
            vec![auth[0], FORM, ("Origin", "http://evil.example")],
            format!("csrf={csrf}"),
        ),
    ] {
        let reply = http_request(port, "POST", &cancel, &headers, &form);
        assert_eq!(reply.status, 403, "{headers:?} {form}: {}", reply.body);
    }
    let acme = Remote::new(port, &acme_key);
    assert_eq!(acme.status(&mine)["cancel_requested"], false);
    // The CLI names the execution's page when it talks to a server.
    let text = acme.ok(&["status", &mine]);
    assert!(
        text.contains(&format!(
            "console: http://127.0.0.1:{port}/executions/{mine}"
        )),
        "{text}"
    );
    // With the token it is done.
    let reply = http_request(port, "POST", &cancel, &auth, &format!("csrf={csrf}"));
    assert_eq!(reply.status, 303, "{}", reply.body);
    assert_eq!(acme.wait_ended(&mine, WAIT)["status"], "cancelled");

    // Unknown paths: a page for browsers, UNIMPLEMENTED for gRPC clients.
    let missing = http_request(port, "GET", "/nothing-here", &[], "");
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("Nothing is at"), "{}", missing.body);

    // A revoked key signs its sessions out.
    let key_id = &acme_key[..12];
    let reply = http_request(
        port,
        "POST",
        &format!("/tenant/keys/{key_id}/revoke"),
        &auth,
        &format!("csrf={csrf}"),
    );
    assert_eq!(reply.status, 303, "{}", reply.body);
    let after = http_request(port, "GET", "/executions", &auth, "");
    assert_eq!(after.status, 303, "{}", after.head);
}

/// An operator key (`admin key create --operator`) signs in to every
/// tenant's executions and to the tenants and nodes page; it may act on
/// any execution, has no packages of its own, and is refused once revoked.
#[test]
fn an_operator_key_sees_every_tenant_and_the_nodes() {
    let db = Db::new();
    let acme_key = db.tenant("acme", &[]);
    let other_key = db.tenant("other", &[]);
    let operator_key = db
        .ok(&["admin", "key", "create", "--operator"])
        .trim()
        .to_owned();
    assert!(operator_key.starts_with("cbk_"), "{operator_key}");
    let port = free_port();
    // Short sleeps stay in process: the sleeping step keeps its lease.
    let _server = db.serve_api(port, &["--hibernate-after-ms", "600000"]);
    let (acme, other) = (Remote::new(port, &acme_key), Remote::new(port, &other_key));
    for cli in [&acme, &other] {
        cli.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
    }
    let mine = started(&acme, "noop3", json!({}));
    let theirs = started(&other, "approval", json!({"key": "ops"}));
    acme.wait_ended(&mine, WAIT);
    wait_status(&other, &theirs, "waiting");
    // Held by a node while it runs (the nodes table).
    let busy = started(&other, "hold_step", json!({"mb": 1, "ms": 30000}));
    wait_status(&other, &busy, "running");

    // The tenant's page shows its usage: the held execution's journal.
    let (other_cookie, _) = sign_in(port, &other_key);
    let usage = http_request(
        port,
        "GET",
        "/tenant",
        &[("Cookie", other_cookie.as_str())],
        "",
    );
    assert!(
        usage.body.contains("longest open: <a href=\"/executions/"),
        "{}",
        usage.body
    );

    // The list shows an open execution's latest progress.
    other.ok(&["upload", path(&guest("deploy")), "--name", "deploy"]);
    let deploying = other
        .ok(&[
            "start",
            "deploy",
            "deploy",
            "--input",
            r#"{"name": "web-1", "ready_after_ms": 0, "settle_ms": 0}"#,
        ])
        .trim()
        .to_owned();
    wait_status(&other, &deploying, "waiting");
    let list = http_request(
        port,
        "GET",
        "/executions",
        &[("Cookie", other_cookie.as_str())],
        "",
    );
    let row = list
        .body
        .split(&format!("<tr data-id=\"{deploying}\">"))
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .unwrap_or_else(|| panic!("no row of {deploying}: {}", list.body));
    assert!(row.contains("80% Waiting for approval"), "{row}");

    // An operator key is no tenant's key: the gRPC API refuses it.
    let refused = Remote::new(port, &operator_key).run(&["list"]);
    assert!(!refused.status.success());

    let (cookie, csrf) = sign_in(port, &operator_key);
    let auth = [("Cookie", cookie.as_str()), FORM];
    let list = http_request(port, "GET", "/executions", &auth, "");
    assert_eq!(list.status, 200, "{}", list.body);
    assert!(
        list.body.contains("operator</b> (every tenant)"),
        "{}",
        list.body
    );
    for id in [&mine, &theirs, &busy] {
        assert!(list.body.contains(id.as_str()), "{id} in {}", list.body);
    }
    let filtered = http_request(port, "GET", "/executions?tenant=other", &auth, "");
    assert!(
        filtered.body.contains(&theirs) && !filtered.body.contains(&mine),
        "{}",
        filtered.body
    );
    let page = http_request(port, "GET", &format!("/executions/{theirs}"), &auth, "");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("Approval <code>ops</code>"),
        "{}",
        page.body
    );
    let missing = http_request(
        port,
        "GET",
        "/executions/00000000-0000-0000-0000-000000000000",
        &auth,
        "",
    );
    assert_eq!(missing.status, 404, "{}", missing.body);

    // The tenants with their usage, and the node that holds the spinning one.
    let tenants = http_request(port, "GET", "/tenant", &auth, "");
    assert_eq!(tenants.status, 200, "{}", tenants.body);
    for name in ["acme", "other"] {
        assert!(
            tenants.body.contains(&format!("data-tenant=\"{name}\"")),
            "{}",
            tenants.body
        );
    }
    let nodes = tenants
        .body
        .split("<table class=\"nodes\">")
        .nth(1)
        .unwrap();
    assert!(
        nodes.contains("<td>1</td>") || nodes.contains("<td>2</td>"),
        "{nodes}"
    );
    // No packages of its own.
    let packages = http_request(port, "GET", "/packages", &auth, "");
    assert_eq!(packages.status, 400, "{}", packages.body);
    assert!(
        packages
            .body
            .contains("an operator key belongs to no tenant"),
        "{}",
        packages.body
    );

    // It may act on any tenant's execution.
    let approve = http_request(
        port,
        "POST",
        &format!("/executions/{theirs}/approve"),
        &auth,
        &format!("csrf={csrf}&key=ops&payload=%7B%22by%22%3A%22ops%22%7D"),
    );
    assert_eq!(approve.status, 303, "{}", approve.body);
    assert_eq!(other.wait_ended(&theirs, WAIT)["status"], "completed");
    // The audit log names the operator's key, the tenant and the address;
    // the tenant sees it too, and not the other tenant's rows.
    let audit = http_request(port, "GET", "/audit", &auth, "");
    assert_eq!(audit.status, 200, "{}", audit.body);
    let row = audit
        .body
        .split("<tr data-action=\"execution.approve\">")
        .nth(1)
        .unwrap_or_else(|| panic!("no approval in the audit log: {}", audit.body));
    let row = &row[..row.find("</tr>").unwrap()];
    let operator_id = cerebelum::api::keys::id_of(&operator_key);
    for expected in [&theirs, operator_id, "other", "127.0.0.1:", "ops"] {
        assert!(row.contains(expected), "{expected} in {row}");
    }
    let (acme_cookie, _) = sign_in(port, &acme_key);
    let acme_audit = http_request(port, "GET", "/audit", &[("Cookie", &acme_cookie)], "");
    assert_eq!(acme_audit.status, 200, "{}", acme_audit.body);
    assert!(
        acme_audit.body.contains("tenant.create"),
        "{}",
        acme_audit.body
    );
    assert!(!acme_audit.body.contains(&theirs), "{}", acme_audit.body);

    // Revoked with the CLI: its session ends.
    db.ok(&["admin", "key", "revoke", &operator_key]);
    let after = http_request(port, "GET", "/executions", &auth, "");
    assert_eq!(after.status, 303, "{}", after.head);
    let listed = db.ok(&["admin", "key", "list", "--operator"]);
    assert!(listed.contains("revoked"), "{listed}");
}

// ---------------------------------------------------------------- browser

/// chromedriver on a free port; killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Self {
        let exe = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect(
                "chromedriver is not installed: install Debian's chromium and chromium-driver \
                 (scripts/test.sh does)",
            );
        let port = free_port();
        let child = Command::new(exe)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }

    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", "--window-size=1280,1100"],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a WebDriver session in headless Chromium")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `script` (a JS expression) is true in the page.
async fn until(browser: &Client, what: &str, script: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let value = browser
            .execute(&format!("return !!({script});"), vec![])
            .await
            .unwrap_or(Value::Bool(false));
        if value == Value::Bool(true) {
            return;
        }
        if Instant::now() > deadline {
            let source = browser.source().await.unwrap_or_default();
            panic!("timed out waiting for {what} ({script}); the page:\n{source}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Types `key` into the sign-in page's field and submits it.
async fn submit_key(browser: &Client, key: &str) {
    let field = browser.find(Locator::Css("input[name=key]")).await.unwrap();
    field.send_keys(key).await.unwrap();
    click(browser, "#login button").await;
}

/// The status badge of the execution page shows `status`.
fn shows(status: &str) -> String {
    format!("document.querySelector('#summary .badge[data-status=\"{status}\"]') !== null")
}

/// Clicks `css` and accepts the confirmation it asks for. The live view
/// may replace the element between finding and clicking it (a stale
/// element): it is found again.
async fn click_and_confirm(browser: &Client, css: &str) {
    for attempt in 1.. {
        let clicked = match browser.find(Locator::Css(css)).await {
            Ok(button) => button.click().await,
            Err(e) => Err(e),
        };
        match clicked {
            Ok(()) => break,
            Err(e) if e.is_stale_element_reference() && attempt < 20 => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("clicking {css}: {e}"),
        }
    }
    browser.accept_alert().await.expect("a confirmation");
}

/// A page on another origin that posts a form to the console at once.
fn forged_page(target: String) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0; 4096];
            let _ = stream.read(&mut buf);
            let page = format!(
                "<!doctype html><form method=\"post\" action=\"{target}\">\
                 <input name=\"csrf\" value=\"guessed\"></form>\
                 <script>document.forms[0].submit()</script>"
            );
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    port
}

/// A server with tenants `acme` (its key, and a CLI of it) and `other`
/// (a CLI), each with the testkit uploaded as `kit`.
struct TwoTenants {
    db: Db,
    server: common::Server,
    port: u16,
    base: String,
    key: String,
    cli: Remote,
    other: Remote,
}

impl TwoTenants {
    fn new() -> Self {
        let db = Db::new();
        let key = db.tenant("acme", &[]);
        let other_key = db.tenant("other", &[]);
        let port = free_port();
        let server = db.serve_api(port, &[]);
        let cli = Remote::new(port, &key);
        cli.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
        let other = Remote::new(port, &other_key);
        other.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
        Self {
            db,
            server,
            port,
            base: format!("http://127.0.0.1:{port}"),
            key,
            cli,
            other,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_operates_executions_in_a_browser() {
    let TwoTenants {
        db: _db,
        server: _server,
        port: _,
        base,
        key,
        cli,
        other,
    } = TwoTenants::new();
    let theirs = started(&other, "approval", json!({"key": "x"}));
    let waiting = started(&cli, "approval", json!({"key": "lb"}));
    wait_status(&cli, &waiting, "waiting");

    let driver = Driver::start();
    let browser = driver.browser().await;

    // Signing in: a wrong key is refused, the right one lands on the list.
    browser.goto(&format!("{base}/executions")).await.unwrap();
    until(
        &browser,
        "the sign-in page",
        "location.pathname === '/login'",
    )
    .await;
    submit_key(&browser, "cbk_00000000_wrong").await;
    until(
        &browser,
        "the refusal",
        "document.querySelector('#error') !== null",
    )
    .await;
    let error = browser
        .find(Locator::Css("#error"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(error.contains("invalid or revoked API key"), "{error}");
    submit_key(&browser, &key).await;
    until(
        &browser,
        "the executions list",
        "location.pathname === '/executions'",
    )
    .await;
    assert_eq!(text_of(&browser, "#tenant").await, "acme");

    // The execution waiting on an approval is in the list; approve it
    // with a payload through the button, and see it complete.
    let link = format!("tr[data-id=\"{waiting}\"] a.id");
    click(&browser, &link).await;
    until(&browser, "the execution page", &shows("waiting")).await;
    // Where it stands, from its journal.
    until(
        &browser,
        "what it waits for",
        "[...document.querySelectorAll('.summary dd')].some(d => d.textContent === \"approval 'lb'\")",
    )
    .await;
    until(
        &browser,
        "the approval form",
        "document.querySelector('.approval[data-key=lb] textarea') !== null",
    )
    .await;
    let payload = browser
        .find(Locator::Css(".approval textarea[name=payload]"))
        .await
        .unwrap();
    payload.clear().await.unwrap();
    // Invalid JSON is caught before it is sent.
    payload.send_keys("{\"pool\": ").await.unwrap();
    click(&browser, ".approval form.approve button").await;
    until(
        &browser,
        "the JSON error",
        "document.querySelector('.approval .json-error').textContent.includes('Not valid JSON')",
    )
    .await;
    payload.send_keys("\"blue\"}").await.unwrap();
    click_and_confirm(&browser, ".approval form.approve button").await;
    until(&browser, "the completed execution", &shows("completed")).await;
    let result = browser
        .find(Locator::Css("#result"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(result.contains("\"pool\": \"blue\""), "{result}");
    assert_eq!(
        cli.status(&waiting)["result"],
        json!({"decision": "approved", "payload": {"pool": "blue"}})
    );
    // No action is left on an ended execution.
    until(
        &browser,
        "the actions to go",
        "document.querySelector('#cancel') === null",
    )
    .await;
    let timeline = browser
        .find(Locator::Css("#timeline"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(timeline.contains("waits for approval 'lb'"), "{timeline}");
    assert!(timeline.contains("completed"), "{timeline}");

    // Live: the page of a waiting execution turns completed without a
    // reload when someone approves it elsewhere.
    let second = started(&cli, "approval", json!({"key": "db"}));
    wait_status(&cli, &second, "waiting");
    browser
        .goto(&format!("{base}/executions/{second}"))
        .await
        .unwrap();
    until(&browser, "the waiting page", &shows("waiting")).await;
    until(
        &browser,
        "the live view",
        "document.querySelector('#execution').dataset.live !== undefined",
    )
    .await;
    browser
        .execute("window.stillThisPage = true; return true;", vec![])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    cli.ok(&["approve", &second, "db", "--payload", "{\"ok\": 1}"]);
    until(
        &browser,
        "the live update to completed",
        &shows("completed"),
    )
    .await;
    until(
        &browser,
        "the same page (no reload)",
        "window.stillThisPage === true",
    )
    .await;
    until(
        &browser,
        "the end of the live view",
        "document.querySelector('#execution').dataset.finished === 'completed'",
    )
    .await;

    // Pause, resume and a signal from the page, as `cerebelum pause`,
    // `resume` and `signal` do them (issue 35, 5).
    let waiter = started(&cli, "signal_wait", json!({"name": "go", "count": 1}));
    wait_status(&cli, &waiter, "waiting");
    browser
        .goto(&format!("{base}/executions/{waiter}"))
        .await
        .unwrap();
    until(&browser, "the waiting execution", &shows("waiting")).await;
    click_and_confirm(&browser, "#pause").await;
    until(
        &browser,
        "the paused execution's Resume button",
        "document.querySelector('#resume') !== null",
    )
    .await;
    assert_eq!(cli.status(&waiter)["paused"], true);
    click_and_confirm(&browser, "#resume").await;
    until(
        &browser,
        "the resumed execution's Pause button",
        "document.querySelector('#pause') !== null",
    )
    .await;
    assert_eq!(cli.status(&waiter)["paused"], false);
    let name = browser.find(Locator::Css("#signal-name")).await.unwrap();
    name.send_keys("go").await.unwrap();
    let payload = browser.find(Locator::Css("#signal-payload")).await.unwrap();
    payload.clear().await.unwrap();
    payload.send_keys(r#"{"from": "console"}"#).await.unwrap();
    click_and_confirm(&browser, "#send-signal").await;
    until(
        &browser,
        "the signalled execution to complete",
        &shows("completed"),
    )
    .await;
    assert_eq!(
        cli.wait_ended(&waiter, WAIT)["result"],
        json!({"signals": [{"from": "console"}]})
    );

    // Cancel from the page: the execution's compensation runs, it ends cancelled.
    let sleeper = started(&cli, "cancellable", json!({"sleep_ms": 600000}));
    wait_status(&cli, &sleeper, "waiting");
    browser
        .goto(&format!("{base}/executions/{sleeper}"))
        .await
        .unwrap();
    until(&browser, "the sleeping execution", &shows("waiting")).await;
    click_and_confirm(&browser, "#cancel").await;
    until(&browser, "the cancelled execution", &shows("cancelled")).await;
    assert_eq!(cli.status(&sleeper)["status"], "cancelled");

    // Retry from the page: it fails until `until_ms`, then an operator
    // retry completes it.
    let until_ms = common::now_ms() + 2000;
    let failing = started(&cli, "retry_me", json!({"until_ms": until_ms}));
    assert_eq!(cli.wait_ended(&failing, WAIT)["status"], "failed");
    browser
        .goto(&format!("{base}/executions/{failing}"))
        .await
        .unwrap();
    until(&browser, "the failed execution", &shows("failed")).await;
    let failure = browser
        .find(Locator::Css("#failure"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!failure.is_empty());
    while common::now_ms() < until_ms + 100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    click_and_confirm(&browser, "#retry").await;
    until(
        &browser,
        "the retried execution to complete",
        &shows("completed"),
    )
    .await;
    // Its timeline: the failed attempt, the operator's retry, the end.
    let timeline = browser
        .find(Locator::Css("#timeline"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "step fail_until 2 attempts",
        "failed: transient: not yet",
        "attempt 2, ",
        "retried by an operator",
        "completed",
    ] {
        assert!(timeline.contains(line), "{line:?} in {timeline}");
    }
    // The README's picture (docs/console-execution.png is a copy), the
    // whole timeline in a tall window.
    browser.set_window_size(1280, 1900).await.unwrap();
    let png = browser.screenshot().await.unwrap();
    browser.set_window_size(1280, 1100).await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::write(root().join("target").join("console-execution.png"), &png).unwrap();
    assert_eq!(cli.status(&failing)["status"], "completed");

    // Upload a package and start it from the form.
    browser.goto(&format!("{base}/packages")).await.unwrap();
    let file = browser
        .find(Locator::Css("#upload input[type=file]"))
        .await
        .unwrap();
    file.send_keys(path(&guest("testkit"))).await.unwrap();
    browser
        .find(Locator::Css("#upload input[name=name]"))
        .await
        .unwrap()
        .send_keys("uploaded")
        .await
        .unwrap();
    click(&browser, "#upload button").await;
    until(
        &browser,
        "the package page",
        "location.pathname === '/packages/uploaded'",
    )
    .await;
    browser
        .find(Locator::Css("select[name=workflow]"))
        .await
        .unwrap()
        .select_by_value("noop3")
        .await
        .unwrap();
    let input = browser
        .find(Locator::Css("#start textarea[name=input]"))
        .await
        .unwrap();
    input.clear().await.unwrap();
    input.send_keys("{\"n\": 1").await.unwrap();
    click(&browser, "#start button").await;
    until(
        &browser,
        "the JSON error",
        "document.querySelector('#start .json-error').textContent.includes('Not valid JSON')",
    )
    .await;
    assert!(
        browser
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/packages/uploaded")
    );
    input.send_keys("}").await.unwrap();
    click(&browser, "#start button").await;
    until(
        &browser,
        "the started execution",
        "location.pathname.startsWith('/executions/')",
    )
    .await;
    until(&browser, "it to complete", &shows("completed")).await;
    let id = browser
        .find(Locator::Css("#execution-id"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let status = cli.status(&id);
    assert_eq!(
        (status["package_name"].as_str(), status["workflow"].as_str()),
        (Some("uploaded"), Some("noop3")),
        "{status}"
    );

    // Another tenant's execution: 404, exactly as a missing one.
    browser
        .goto(&format!("{base}/executions/{theirs}"))
        .await
        .unwrap();
    let error = browser
        .find(Locator::Css("#error"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        error.contains(&format!("no execution with id '{theirs}'")),
        "{error}"
    );
    let title = browser
        .find(Locator::Css("h1"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(title, "Not Found");

    // CSRF: a page on another origin posts a cancel with the session's
    // cookie; it is refused and the execution keeps waiting.
    let target = started(&cli, "approval", json!({"key": "keep"}));
    wait_status(&cli, &target, "waiting");
    let evil = forged_page(format!("{base}/executions/{target}/cancel"));
    browser
        .goto(&format!("http://127.0.0.1:{evil}/"))
        .await
        .unwrap();
    until(
        &browser,
        "the refusal",
        "document.title.startsWith('Refused')",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = cli.status(&target);
    assert_eq!(
        (
            status["status"].as_str(),
            status["cancel_requested"].as_bool()
        ),
        (Some("waiting"), Some(false)),
        "{status}"
    );

    browser.close().await.unwrap();
}

/// What every hostile value below carries: markup, quotes that end an
/// attribute, a `javascript:` URL and a script, each of which leaves a
/// trace (an element of class `xss`, `window.pwned`) if a page let it
/// through as HTML.
const HOSTILE: &str = "\"'><i class=\"xss\">x</i><img class=xss src=x onerror=\"window.pwned=1\">\
                       <script>window.pwned=1</script><a class=xss href=\"javascript:window.pwned=1\">j</a>";

/// The Schedules and Workers pages do what `cerebelum schedule
/// pause|resume|trigger-now` and `cerebelum workers` do, for the signed-in
/// tenant only (issue 35, 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_and_workers_pages_act_as_the_cli_does() {
    let TwoTenants {
        db: _db,
        server: _server,
        port,
        base,
        key,
        cli,
        other,
    } = TwoTenants::new();
    let yearly = ["--cron", "0 3 1 1 *", "--input", "{}"];
    cli.ok(&[
        &["schedule", "create", "nightly", "kit", "noop3"][..],
        &yearly[..],
    ]
    .concat());
    other.ok(&[
        &["schedule", "create", "theirs", "kit", "noop3"][..],
        &yearly[..],
    ]
    .concat());
    // A step on a queue no worker serves.
    let placed = cli.ok(&[
        "start",
        "kit",
        "noop3",
        "--input",
        "{}",
        "--worker-queue",
        "builders",
    ]);
    let placed = placed.trim().to_owned();

    // Another tenant's schedule is "not found", as a missing one.
    let (cookie, csrf) = sign_in(port, &key);
    let auth = [("Cookie", cookie.as_str()), FORM];
    for what in ["pause", "resume", "trigger"] {
        let path = format!("/schedules/theirs/{what}");
        let reply = http_request(port, "POST", &path, &auth, &format!("csrf={csrf}"));
        assert_eq!(reply.status, 404, "POST {path}: {}", reply.body);
    }
    let page = http_request(port, "GET", "/schedules", &auth, "");
    assert!(
        page.body.contains("nightly") && !page.body.contains("theirs"),
        "{}",
        page.body
    );

    let driver = Driver::start();
    let browser = driver.browser().await;
    browser.goto(&format!("{base}/schedules")).await.unwrap();
    submit_key(&browser, &key).await;
    browser.goto(&format!("{base}/schedules")).await.unwrap();
    until(
        &browser,
        "the schedules page",
        "document.querySelector('tr[data-schedule=\"nightly\"]') !== null",
    )
    .await;
    let paused = || async {
        // One JSON object per line.
        let listed = cli.ok(&["schedule", "list", "--json"]);
        let first: Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
        first["paused"].clone()
    };
    click_and_confirm(&browser, "tr[data-schedule='nightly'] button.pause").await;
    until(
        &browser,
        "the paused schedule's Resume button",
        "document.querySelector('tr[data-schedule=\"nightly\"] button.resume') !== null",
    )
    .await;
    assert_eq!(paused().await, true);
    click_and_confirm(&browser, "tr[data-schedule='nightly'] button.resume").await;
    until(
        &browser,
        "the resumed schedule's Pause button",
        "document.querySelector('tr[data-schedule=\"nightly\"] button.pause') !== null",
    )
    .await;
    assert_eq!(paused().await, false);
    // Trigger now: the page of the execution it started.
    click_and_confirm(&browser, "tr[data-schedule='nightly'] button.trigger").await;
    until(
        &browser,
        "the triggered execution's page",
        "location.pathname.startsWith('/executions/ex_')",
    )
    .await;
    let url = browser.current_url().await.unwrap();
    let id = url.path().trim_start_matches("/executions/").to_owned();
    assert_eq!(cli.wait_ended(&id, WAIT)["status"], "completed");
    // Its page says where it came from, with a link to the schedule.
    let origin = browser.find(Locator::Css("#origin")).await.unwrap();
    let said = origin.text().await.unwrap();
    assert!(
        said.starts_with("schedule nightly, Trigger now at "),
        "{said}"
    );
    let link = origin.find(Locator::Css("a")).await.unwrap();
    assert_eq!(
        link.attr("href").await.unwrap().as_deref(),
        Some("/schedules#schedule-nightly")
    );

    // An HTTP trigger's deliveries: listed under it, and each execution
    // says which trigger and delivery started it.
    let token = cli.ok(&["trigger", "create", "hook", "kit", "noop3"]);
    let token = token.trim();
    let bearer = format!("Bearer {token}");
    let delivered = http_request(
        port,
        "POST",
        "/t/acme/hook",
        &[
            ("Authorization", bearer.as_str()),
            ("Idempotency-Key", "d-1"),
            ("Content-Type", "application/json"),
        ],
        "{}",
    );
    assert!(
        delivered.status < 300,
        "{}\n{}",
        delivered.head,
        delivered.body
    );
    browser.goto(&format!("{base}/schedules")).await.unwrap();
    until(
        &browser,
        "the trigger's delivery",
        "document.querySelector('#trigger-hook .deliveries a.id') !== null",
    )
    .await;
    click(&browser, "#trigger-hook .deliveries a.id").await;
    until(
        &browser,
        "the delivery's execution",
        "document.querySelector('#origin') !== null",
    )
    .await;
    assert_eq!(
        text_of(&browser, "#origin").await,
        "HTTP trigger hook, delivery d-1"
    );

    // Workers: the queue with a waiting task and no worker is called out
    // (the task is queued as soon as an engine runs the execution).
    let deadline = Instant::now() + WAIT;
    loop {
        browser.goto(&format!("{base}/workers")).await.unwrap();
        let shown = browser
            .execute(
                "return document.querySelector('section[data-queue=\"builders\"] .unserved') !== null;",
                vec![],
            )
            .await
            .unwrap();
        if shown == Value::Bool(true) {
            break;
        }
        assert!(Instant::now() < deadline, "no warning for queue builders");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let warning = browser
        .find(Locator::Css("section[data-queue='builders'] .unserved"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        warning.contains("No worker polls 'builders'")
            && warning.contains("python -m cerebelum worker FILE --queue builders"),
        "{warning}"
    );

    // At a phone's width (390 px) no page scrolls sideways and Sign out
    // stays on screen.
    browser.set_window_size(390, 844).await.unwrap();
    for page in [
        "/executions".to_owned(),
        format!("/executions/{id}"),
        format!("/executions/{placed}"),
        "/schedules".to_owned(),
        "/workers".to_owned(),
        "/packages".to_owned(),
        "/tenant".to_owned(),
    ] {
        browser.goto(&format!("{base}{page}")).await.unwrap();
        until(&browser, &page, "document.readyState === 'complete'").await;
        let fits = browser
            .execute(
                "const out = document.querySelector('form.signout button')\
                   .getBoundingClientRect();\
                 return [document.documentElement.scrollWidth, window.innerWidth, out.right];",
                vec![],
            )
            .await
            .unwrap();
        let [scroll, inner, signout] = [0, 1, 2].map(|i| fits[i].as_f64().unwrap());
        assert!(
            scroll <= inner && signout <= inner,
            "{page} at 390 px: {scroll} px wide in a {inner} px window, Sign out ends at {signout}"
        );
    }
    browser.close().await.unwrap();
}

/// Nothing of [`HOSTILE`] became markup or ran on the page open in
/// `browser`; the page shows it as text when `shown`.
async fn nothing_ran(browser: &Client, page: &str, shown: bool) {
    let check = browser
        .execute(
            "return {
               pwned: window.pwned === 1,
               injected: document.querySelectorAll('.xss, [onerror], i, img').length,
               scripts: [...document.scripts].map(s => s.src),
               javascript: document.querySelectorAll('a[href^=\"javascript:\" i]').length,
               text: document.body.innerText.includes('<img class=xss src=x onerror='),
             };",
            vec![],
        )
        .await
        .unwrap_or_else(|e| panic!("{page}: {e}"));
    if check["pwned"] != json!(false)
        || check["injected"] != json!(0)
        || check["javascript"] != json!(0)
        || check["scripts"].as_array().map(Vec::len) != Some(1)
        || (shown && check["text"] != json!(true))
    {
        let source = browser.source().await.unwrap_or_default();
        panic!("{page}: {check}\n{source}");
    }
}

/// Clicks `css` in the page.
async fn click(browser: &Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

/// The text of `css` in the page.
async fn text_of(browser: &Client, css: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

/// The ids of the list's rows, top to bottom.
async fn listed(browser: &Client) -> Vec<String> {
    let ids = browser
        .execute(
            "return [...document.querySelectorAll('#rows tr[data-id]')].map(r => r.dataset.id);",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(ids).unwrap()
}

/// Opens the list of the three `approval` executions of the list test.
async fn approvals(browser: &Client, base: &str) {
    let url = format!("{base}/executions?workflow=approval");
    browser.goto(&url).await.unwrap();
    until(
        browser,
        "the approvals",
        "document.querySelectorAll('#rows tr[data-id]').length === 3",
    )
    .await;
}

/// Issue 35 (5): the executions list counts per status, filters by a
/// field of the input, a time range and a workflow prefix, pages back as
/// well as forward, and cancels or retries the executions ticked in it —
/// each as its own button would, and never another tenant's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_counts_filters_pages_both_ways_and_acts_on_a_selection() {
    let TwoTenants {
        db: _db,
        server: _server,
        port,
        base,
        key,
        cli,
        other,
    } = TwoTenants::new();
    let theirs = started(&other, "approval", json!({"key": "x"}));
    let waiting: Vec<String> = (1..=3)
        .map(|i| {
            started(
                &cli,
                "approval",
                json!({"key": "k", "name": format!("web-{i}")}),
            )
        })
        .collect();
    let mut c = common::grpc::connect(port, &key).await;
    for n in 0..52 {
        let input = json!({ "n": n }).to_string();
        common::grpc::start_to_completion(&mut c, "kit", "nothing", &input).await;
    }
    for id in &waiting {
        wait_status(&cli, id, "waiting");
    }

    let driver = Driver::start();
    let browser = driver.browser().await;
    browser.goto(&format!("{base}/executions")).await.unwrap();
    submit_key(&browser, &key).await;
    until(
        &browser,
        "the counts",
        "document.querySelector('#counts[data-loaded]') !== null",
    )
    .await;
    // Counts per status, of this tenant's executions only.
    assert_eq!(
        text_of(&browser, "#counts a[data-status=''] .n").await,
        "55"
    );
    assert_eq!(
        text_of(&browser, "#counts a[data-status=waiting] .n").await,
        "3"
    );
    assert_eq!(
        text_of(&browser, "#counts a[data-status=completed] .n").await,
        "52"
    );
    assert_eq!(
        text_of(&browser, "#counts a[data-status=failed] .n").await,
        "0"
    );

    // Both-way paging, 50 a page, newest first.
    let first = listed(&browser).await;
    assert_eq!(first.len(), 50);
    // The three started first are the oldest: on the second page.
    assert!(waiting.iter().all(|id| !first.contains(id)));

    assert!(
        browser.find(Locator::Css("#prev")).await.is_err(),
        "the first page has no newer"
    );
    click(&browser, "#next").await;
    until(
        &browser,
        "the second page",
        "document.querySelector('#prev') !== null",
    )
    .await;
    let second = listed(&browser).await;
    assert_eq!(second.len(), 5, "{second:?}");
    assert!(second.iter().all(|id| !first.contains(id)));
    assert_eq!(
        second[2..],
        [&waiting[2], &waiting[1], &waiting[0]].map(|s| s.clone())
    );
    click(&browser, "#prev").await;
    until(
        &browser,
        "the first page again",
        "document.querySelector('#next') !== null",
    )
    .await;
    assert_eq!(listed(&browser).await, first);

    // A field of the input, typed into the form.
    let field = browser
        .find(Locator::Css("form.filters input[name=input]"))
        .await
        .unwrap();
    field.send_keys("input.name = web-2").await.unwrap();
    click(&browser, "form.filters button[type=submit]").await;
    until(
        &browser,
        "the input filter",
        "location.search.includes('input=')",
    )
    .await;
    assert_eq!(listed(&browser).await, [waiting[1].clone()]);
    until(
        &browser,
        "the filtered counts",
        "document.querySelector('#counts[data-loaded]') !== null",
    )
    .await;
    assert_eq!(text_of(&browser, "#counts a[data-status=''] .n").await, "1");
    // A time range: nothing started after tomorrow; a mistyped time says
    // how to write it.
    browser
        .goto(&format!(
            "{base}/executions?workflow=appr&from=2999-01-01T00:00"
        ))
        .await
        .unwrap();
    until(
        &browser,
        "an empty range",
        "document.querySelector('#rows td.muted') !== null",
    )
    .await;
    browser
        .goto(&format!(
            "{base}/executions?workflow=appr&from=2000-01-01&to=2999-01-01T00:00"
        ))
        .await
        .unwrap();
    until(
        &browser,
        "the range",
        "document.querySelectorAll('#rows tr[data-id]').length === 3",
    )
    .await;
    browser
        .goto(&format!("{base}/executions?from=soon"))
        .await
        .unwrap();
    let page = browser.source().await.unwrap();
    assert!(
        page.contains("is not a time: write it as 2026-11-26T10:00"),
        "{page}"
    );

    // Tick two waiting executions and cancel them.
    approvals(&browser, &base).await;
    for id in &waiting[..2] {
        let tick = format!("#rows tr[data-id=\"{id}\"] input[name=id]");
        click(&browser, &tick).await;
    }
    click_and_confirm(&browser, "#bulk-cancel").await;
    until(
        &browser,
        "what was done",
        "document.querySelector('#done') !== null",
    )
    .await;
    assert_eq!(text_of(&browser, "#done").await, "cancelled 2 of 2");
    assert!(
        browser
            .current_url()
            .await
            .unwrap()
            .as_str()
            .contains("workflow=approval")
    );
    for id in &waiting[..2] {
        assert_eq!(cli.wait_ended(id, WAIT)["status"], "cancelled");
    }
    wait_status(&cli, &waiting[2], "waiting");
    // Select all (the header's box), then retry: the cancelled two are
    // retried, the waiting one is refused and says why.
    approvals(&browser, &base).await;
    click(&browser, "#pick-all").await;
    click_and_confirm(&browser, "#bulk-retry").await;
    until(
        &browser,
        "what was done",
        "document.querySelector('#done') !== null",
    )
    .await;
    let done = text_of(&browser, "#done").await;
    assert!(
        done.starts_with("retried 2 of 3; retrying refused for "),
        "{done}"
    );
    assert!(done.contains(&waiting[2]), "{done}");
    for id in &waiting[..2] {
        wait_status(&cli, id, "waiting");
    }
    browser.close().await.unwrap();

    // Another tenant's execution, posted in a bulk action, is refused as
    // unknown and stays as it was; without the session's token nothing is
    // done at all.
    let (cookie, csrf) = sign_in(port, &key);
    let body = format!("csrf={csrf}&action=cancel&back=%2Fexecutions&id={theirs}");
    let reply = http_request(
        port,
        "POST",
        "/executions/bulk",
        &[FORM, ("Cookie", &cookie)],
        &body,
    );
    assert_eq!(reply.status, 303, "{}", reply.body);
    let location = reply
        .head
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .unwrap();
    assert!(location.contains("cancelled%200%20of%201"), "{location}");
    let forged = format!("csrf=guessed&action=cancel&id={}", waiting[2]);
    let reply = http_request(
        port,
        "POST",
        "/executions/bulk",
        &[FORM, ("Cookie", &cookie)],
        &forged,
    );
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_eq!(other.status(&theirs)["status"], "waiting");
    assert_eq!(cli.status(&waiting[2])["status"], "waiting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_and_values_are_shown_as_text_on_every_page() {
    let db = Db::new();
    let key = db.tenant("acme", &[]);
    let port = free_port();
    let _server = db.serve_api(port, &[]);
    let base = format!("http://127.0.0.1:{port}");
    let cli = Remote::new(port, &key);
    cli.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
    // An approval and a signal named with it, an input and a result
    // holding it, an approval rejected for it.
    let approval = started(&cli, "approval", json!({"key": HOSTILE}));
    let signal = started(&cli, "signal_wait", json!({"name": HOSTILE, "count": 1}));
    let returned = started(&cli, "nothing", json!({HOSTILE: HOSTILE}));
    let rejected = started(&cli, "approval", json!({"key": "r"}));
    for id in [&approval, &signal, &rejected] {
        wait_status(&cli, id, "waiting");
    }
    wait_status(&cli, &returned, "completed");
    cli.ok(&["reject", &rejected, "r", "--reason", HOSTILE]);
    wait_status(&cli, &rejected, "completed");

    let driver = Driver::start();
    let browser = driver.browser().await;
    browser.goto(&format!("{base}/login")).await.unwrap();
    submit_key(&browser, &key).await;
    until(&browser, "signed in", "location.pathname === '/executions'").await;

    let q = |s: &str| s.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
    let hostile = q(HOSTILE);
    let pages = [
        (format!("/executions/{approval}"), true),
        (format!("/executions/{signal}"), true),
        (format!("/executions/{returned}"), true),
        (format!("/executions/{rejected}"), true),
        // Filters echoed into fields, the refresh address and links.
        (
            format!("/executions?q={hostile}&package={hostile}&workflow={hostile}&status="),
            false,
        ),
        (format!("/executions?status={hostile}"), true),
        // Refused for its length, before anything echoes it.
        (format!("/executions/{hostile}"), false),
        (format!("/packages/{hostile}"), true),
        ("/packages/kit".to_owned(), false),
        ("/packages".to_owned(), false),
        ("/tenant".to_owned(), false),
        (format!("/{hostile}"), false),
    ];
    for (page, shown) in &pages {
        browser.goto(&format!("{base}{page}")).await.unwrap();
        until(&browser, page, "document.readyState === 'complete'").await;
        nothing_ran(&browser, page, *shown).await;
    }
    // The live view brings rows and actions in as HTML too: a signal
    // arrives while the page is open, and the approval is decided in it.
    browser
        .goto(&format!("{base}/executions/{signal}"))
        .await
        .unwrap();
    until(&browser, "the waiting page", &shows("waiting")).await;
    cli.ok(&[
        "signal",
        &signal,
        HOSTILE,
        "--payload",
        &json!(HOSTILE).to_string(),
    ]);
    until(&browser, "the signal's result", &shows("completed")).await;
    nothing_ran(&browser, "the live signal page", true).await;
    browser
        .goto(&format!("{base}/executions/{approval}"))
        .await
        .unwrap();
    until(
        &browser,
        "the approval form",
        "document.querySelector('.approval form.approve') !== null",
    )
    .await;
    // Read in one script: the live page may re-render the form between
    // finding it and reading it (a stale element).
    let confirm = browser
        .execute(
            "return document.querySelector('.approval form.approve').getAttribute('data-confirm');",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        confirm.as_str(),
        Some(format!("Approve '{HOSTILE}' with this payload?").as_str())
    );
    click_and_confirm(&browser, ".approval form.approve button").await;
    until(&browser, "the approved execution", &shows("completed")).await;
    nothing_ran(&browser, "the approved page", true).await;
    assert_eq!(
        cli.status(&approval)["result"],
        json!({"decision": "approved", "payload": {}})
    );
    // The audit log names the approval's key.
    browser.goto(&format!("{base}/audit")).await.unwrap();
    until(&browser, "/audit", "document.readyState === 'complete'").await;
    nothing_ran(&browser, "/audit", true).await;
    browser.close().await.unwrap();
}

/// Resident memory of process `pid` now (VmRSS), bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap()
        << 10
}

/// Issue 31 (2): 100 viewers of a big execution's live page cost a copy
/// of its journal each (4.6 GB for 20,000 steps), starved the database
/// and kept `serve` from exiting on SIGTERM. They share one view now:
/// each gets the timeline once, then only the rows that changed; the
/// server's memory hardly moves; SIGTERM ends their streams and the
/// server exits.
#[test]
fn a_hundred_live_viewers_share_one_view_and_end_on_sigterm() {
    let db = Db::new();
    let key = db.tenant("acme", &[]);
    let port = free_port();
    let server = db.serve_api(port, &[]);
    let cli = Remote::new(port, &key);
    cli.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
    let id = started(&cli, "many_steps", json!({ "n": 50_000 }));
    let count = format!("SELECT COUNT(*) FROM journal WHERE execution_id = '{id}'");
    let entries = || db.scalar(&count);
    let deadline = Instant::now() + WAIT;
    while entries() < 6_000 {
        assert!(Instant::now() < deadline, "the execution hardly moved");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (cookie, _) = sign_in(port, &key);
    // The page as a browser loads it, then its live stream ×100.
    let page = http_request(
        port,
        "GET",
        &format!("/executions/{id}"),
        &[("Cookie", &cookie)],
        "",
    );
    let live = page
        .body
        .split("data-live=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a live page")
        .replace("&amp;", "&");
    let viewer = |(cookie, live): (String, String)| {
        std::thread::spawn(move || {
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            write!(
                stream,
                "GET {live} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n\r\n"
            )
            .unwrap();
            // Until the server ends the stream.
            let mut got = Vec::new();
            let _ = stream.read_to_end(&mut got);
            String::from_utf8_lossy(&got).into_owned()
        })
    };
    // The most resident memory while the execution makes 2,000 more
    // entries (the server's memory moves with the execution too: what
    // one viewer costs is measured first, then what 99 more add).
    let follow = || {
        let (from, mut most) = (entries(), rss(server.pid()));
        while entries() < from + 2_000 {
            assert!(Instant::now() < deadline, "the execution stopped moving");
            most = most.max(rss(server.pid()));
            std::thread::sleep(Duration::from_millis(50));
        }
        most
    };
    let before = rss(server.pid());
    let mut viewers = vec![viewer((cookie.clone(), live.clone()))];
    let with_one = follow();
    viewers.extend((0..99).map(|_| viewer((cookie.clone(), live.clone()))));
    let with_hundred = follow();
    let (one, more) = (
        with_one.saturating_sub(before),
        with_hundred.saturating_sub(with_one),
    );
    eprintln!(
        "serve's resident memory: +{:.1} MB with one viewer, then +{:.1} MB for 99 more",
        one as f64 / 1e6,
        more as f64 / 1e6
    );
    // A copy of the journal each (the defect) would be hundreds of MB.
    assert!(
        more < 8 << 20,
        "99 more viewers grew the server by {} MB",
        more >> 20
    );
    let began = Instant::now();
    assert!(
        server.terminate(Duration::from_secs(10)),
        "serve did not exit on SIGTERM with 100 live viewers"
    );
    eprintln!("SIGTERM to exit: {:?}", began.elapsed());
    for viewer in viewers {
        let text = viewer.join().unwrap();
        assert!(
            text.starts_with("HTTP/1.1 200"),
            "{}",
            &text[..text.len().min(300)]
        );
        assert!(
            !text.contains("event: timeline"),
            "the whole timeline is never sent again"
        );
        assert!(
            text.contains("event: rows"),
            "then the rows that changed: {} summaries, {} bytes, ends with {}",
            text.matches("event: summary").count(),
            text.len(),
            &text[text.len().saturating_sub(300)..]
        );
    }
}

/// `cerebelum dev` (issue 35, 2): `serve` on loopback with a key made for
/// the developer, printed as a ready `export` line the CLI works with, and
/// a console that signs a browser on this machine in without a key; a
/// request naming another host (DNS rebinding), and `serve`, still get the
/// sign-in page; an address other than loopback is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cerebelum_dev_opens_the_console_without_sign_in_on_loopback() {
    use std::io::BufRead;
    let db = Db::new();
    let port = free_port();
    let mut child = db
        .command(&["dev", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting cerebelum dev");
    let stdout = child.stdout.take().unwrap();
    let dev = common::Server::from(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    let exports: Vec<&str> = line
        .trim()
        .strip_prefix("export ")
        .unwrap_or_else(|| panic!("not an export line: {line:?}"))
        .split(' ')
        .collect();
    assert_eq!(
        exports[0],
        format!("CEREBELUM_SERVER=http://127.0.0.1:{port}")
    );
    let key = exports[1].strip_prefix("CEREBELUM_API_KEY=").unwrap();
    let cli = Remote::new(port, key);
    cli.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
    let id = started(&cli, "nothing", json!({"dev": true}));
    wait_status(&cli, &id, "completed");

    let driver = Driver::start();
    let browser = driver.browser().await;
    browser
        .goto(&format!("http://127.0.0.1:{port}/"))
        .await
        .unwrap();
    until(
        &browser,
        "the list, without a sign-in page",
        "location.pathname === '/executions'",
    )
    .await;
    until(
        &browser,
        "the execution started with the printed key",
        &format!("document.querySelector('tr[data-id=\"{id}\"]') !== null"),
    )
    .await;
    let tenant = browser
        .find(Locator::Css("#tenant"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(tenant, "default");
    browser.close().await.unwrap();

    let as_host = |port: u16, host: &str| {
        http_request(
            port,
            "GET",
            "/login",
            &[("Host", &format!("{host}:{port}"))],
            "",
        )
    };
    let local = as_host(port, "localhost");
    assert_eq!(local.status, 303, "{}", local.head);
    let rebound = as_host(port, "evil.example");
    assert!(
        rebound.status == 200 && rebound.body.contains("id=\"login\""),
        "{}\n{}",
        rebound.head,
        rebound.body
    );
    assert!(!rebound.head.contains("set-cookie"), "{}", rebound.head);
    drop(dev);

    let port = free_port();
    let _server = db.serve_api(port, &[]);
    let served = as_host(port, "127.0.0.1");
    assert!(
        served.status == 200 && served.body.contains("id=\"login\""),
        "{}\n{}",
        served.head,
        served.body
    );

    let stderr = db.fails(&["dev", "--listen", "0.0.0.0:0"]);
    assert!(stderr.contains("listens on loopback only"), "{stderr}");
}

/// Issue 36: the package page checks a version against the open
/// executions of the versions before it, in a browser: a version without
/// their workflow diverges for each, listed and linked; the first version
/// has nothing before it; another tenant's executions are not checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_package_page_checks_a_version_against_open_executions() {
    let TwoTenants {
        db: _db,
        server: _server,
        port: _,
        base,
        key,
        cli,
        other,
    } = TwoTenants::new();
    let input = json!({"n": 2, "key": "go"});
    let open = started(&cli, "steps_then_wait", input.clone());
    let theirs = started(&other, "steps_then_wait", input);
    wait_status(&cli, &open, "waiting");
    wait_status(&other, &theirs, "waiting");
    // Version 2 of `kit` lacks the workflow the open execution runs.
    cli.ok(&["upload", path(&guest("hello")), "--name", "kit"]);

    let driver = Driver::start();
    let browser = driver.browser().await;
    browser.goto(&format!("{base}/login")).await.unwrap();
    submit_key(&browser, &key).await;
    until(
        &browser,
        "the executions list",
        "location.pathname === '/executions'",
    )
    .await;
    browser.goto(&format!("{base}/packages/kit")).await.unwrap();
    browser
        .find(Locator::Css("#check select[name=check]"))
        .await
        .unwrap()
        .select_by_value("2")
        .await
        .unwrap();
    click(&browser, "#check button").await;
    until(
        &browser,
        "the check's report",
        "document.querySelector('#check-summary') !== null",
    )
    .await;
    let summary = text_of(&browser, "#check-summary").await;
    assert!(
        summary.contains("checked 1 open execution of kit's earlier versions")
            && summary.contains("0 compatible, 1 would diverge"),
        "{summary}"
    );
    let row = text_of(&browser, &format!("#check-report tr[data-id=\"{open}\"]")).await;
    assert!(
        row.contains("v1") && row.contains("no workflow named 'steps_then_wait'"),
        "{row}"
    );
    assert!(
        !browser.source().await.unwrap().contains(&theirs),
        "another tenant's execution is not checked"
    );
    // The row links to the execution.
    click(&browser, &format!("#check-report tr[data-id=\"{open}\"] a")).await;
    until(
        &browser,
        "the execution page",
        &format!("location.pathname === '/executions/{open}'"),
    )
    .await;

    // Version 1 has no version before it.
    browser
        .goto(&format!("{base}/packages/kit?check=1"))
        .await
        .unwrap();
    until(
        &browser,
        "the check's report",
        "document.querySelector('#check-summary') !== null",
    )
    .await;
    let summary = text_of(&browser, "#check-summary").await;
    assert!(summary.contains("checked 0 open executions"), "{summary}");
    browser.close().await.unwrap();
}
