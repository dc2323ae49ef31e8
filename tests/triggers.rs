//! HTTP triggers (issue 18), end to end: a real `cerebelum serve`, real
//! HTTP requests signed with HMAC-SHA256 (GitHub's form) or carrying a
//! token; wrong signatures, replayed deliveries, oversized bodies, and
//! `kill -9` of the server during a request, retried with the same
//! delivery id: exactly one execution.

use cerebelum_harness as common;
use common::WAIT;

use common::{Db, Remote, free_port, guest, http_request, path};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::time::{Duration, Instant};

common::on_both_backends!(
    signed_requests_start_once_per_delivery_and_bad_ones_start_nothing,
    a_request_cut_by_kill9_and_retried_starts_one_execution
);

const SECRET: &str = "webhook-signing-secret";

fn sign(body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// POSTs `body` to trigger `name` of tenant `acme` with `headers`: status
/// and JSON answer.
fn post(port: u16, name: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let reply = http_request(port, "POST", &format!("/t/acme/{name}"), headers, body);
    let json = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
    (reply.status, json)
}

fn count(db: &Db, prefix: &str) -> usize {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(common::executions_by_key(&db.url, prefix))
        .len()
}

/// A server with tenant `acme` (payload quota 1 KiB), its signing secret,
/// the testkit uploaded and trigger `push` signed by it.
fn setup(db: &Db) -> (common::Server, Remote, u16) {
    let key = db.tenant("acme", &["--max-payload-kb", "1"]);
    db.set_secret("acme", "hook", SECRET);
    let port = free_port();
    let server = db.serve_api(port, &[]);
    let cli = Remote::new(port, &key);
    cli.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
    cli.ok(&[
        "trigger",
        "create",
        "push",
        "kit",
        "approval",
        "--secret-hmac",
        "hook",
    ]);
    (server, cli, port)
}

fn signed_requests_start_once_per_delivery_and_bad_ones_start_nothing(db: Db) {
    let (_server, cli, port) = setup(&db);
    let body = r#"{"key":"deploy"}"#;
    let signature = sign(body);
    let headers = [
        ("x-hub-signature-256", signature.as_str()),
        ("x-github-delivery", "delivery-1"),
    ];
    let (status, first) = post(port, "push", &headers, body);
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["created"], true);
    let id = first["execution"].as_str().unwrap().to_owned();
    // The body is the input.
    let started = cli.status(&id);
    assert_eq!(started["input"]["key"], "deploy", "{started}");
    // A redelivery starts nothing new.
    let (status, again) = post(port, "push", &headers, body);
    assert_eq!((status, &again["execution"]), (200, &first["execution"]));
    assert_eq!(again["created"], false);
    assert_eq!(count(&db, "trigger:push:"), 1);

    // Issue 31 (9): the longest name with the longest delivery id fits
    // (it was "the idempotency key is 337 bytes long").
    let long = "t".repeat(128);
    cli.ok(&[
        "trigger",
        "create",
        &long,
        "kit",
        "approval",
        "--secret-hmac",
        "hook",
    ]);
    let delivery = "d".repeat(200);
    let long_headers = [
        ("x-hub-signature-256", signature.as_str()),
        ("x-github-delivery", delivery.as_str()),
    ];
    let (status, first_long) = post(port, &long, &long_headers, body);
    assert_eq!(status, 202, "{first_long}");
    let (status, again_long) = post(port, &long, &long_headers, body);
    assert_eq!(
        (status, &again_long["execution"]),
        (200, &first_long["execution"])
    );

    // Refused, and nothing started.
    let wrong = sign(r#"{"key":"other"}"#);
    let refusals = [
        (
            "wrong signature",
            vec![
                ("x-hub-signature-256", wrong.as_str()),
                ("x-github-delivery", "d2"),
            ],
            body.to_owned(),
            401,
            "wrong signature",
        ),
        (
            "no signature",
            vec![("x-github-delivery", "d3")],
            body.to_owned(),
            401,
            "missing signature",
        ),
        (
            "malformed signature",
            vec![
                ("x-hub-signature-256", "md5=00"),
                ("x-github-delivery", "d4"),
            ],
            body.to_owned(),
            401,
            "malformed",
        ),
        (
            "over the payload quota",
            vec![("x-github-delivery", "d5")],
            format!(r#"{{"pad":"{}"}}"#, "x".repeat(4096)),
            413,
            "larger than tenant 'acme' may send",
        ),
        (
            "not JSON",
            vec![("x-github-delivery", "d6")],
            "not json".to_owned(),
            400,
            "not JSON",
        ),
        (
            "no such trigger",
            vec![("x-github-delivery", "d7")],
            body.to_owned(),
            404,
            "no trigger",
        ),
    ];
    for (what, mut headers, body, code, says) in refusals {
        let signature = sign(&body);
        if what == "not JSON" {
            headers.push(("x-hub-signature-256", &signature));
        }
        let name = if what == "no such trigger" {
            "nope"
        } else {
            "push"
        };
        let (status, answer) = post(port, name, &headers, &body);
        assert_eq!(status, code, "{what}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(says),
            "{what}: {answer}"
        );
    }
    assert_eq!(
        count(&db, "trigger:push:"),
        1,
        "a refused request started something"
    );

    // Issue 31 (10): a signed timestamp bounds replays to 5 minutes.
    let now_s = common::now_ms() / 1000;
    let stamped = |at: i64, delivery: &str| {
        let at = at.to_string();
        let signature = sign(&format!("{at}.{body}"));
        post(
            port,
            "push",
            &[
                ("x-hub-signature-256", signature.as_str()),
                ("x-cerebelum-timestamp", at.as_str()),
                ("x-github-delivery", delivery),
            ],
            body,
        )
    };
    let (status, fresh) = stamped(now_s, "stamped-1");
    assert_eq!(status, 202, "{fresh}");
    let (status, old) = stamped(now_s - 600, "stamped-2");
    assert_eq!(status, 401, "{old}");
    assert!(
        old["error"].as_str().unwrap().contains("5 minutes"),
        "{old}"
    );
    // The timestamp is inside the HMAC: the body-only signature with a
    // timestamp added does not pass.
    let (status, _) = post(
        port,
        "push",
        &[
            ("x-hub-signature-256", signature.as_str()),
            ("x-cerebelum-timestamp", &now_s.to_string()),
            ("x-github-delivery", "stamped-3"),
        ],
        body,
    );
    assert_eq!(status, 401);
    assert_eq!(count(&db, "trigger:push:"), 2);

    // A token trigger.
    let token = cli
        .ok(&["trigger", "create", "alert", "kit", "noop3"])
        .trim()
        .to_owned();
    assert!(token.starts_with("cbt_"), "{token}");
    let bearer = format!("Bearer {token}");
    let (status, answer) = post(port, "alert", &[("authorization", &bearer)], "");
    assert_eq!(status, 202, "{answer}");
    let (status, _) = post(port, "alert", &[("authorization", "Bearer cbt_wrong")], "");
    assert_eq!(status, 401);
    let listed = cli.ok(&["trigger", "list"]);
    assert!(
        listed.contains("POST /t/acme/push") && listed.contains("signed with secret 'hook'"),
        "{listed}"
    );
    assert!(
        !listed.contains(&token),
        "the token is shown once: {listed}"
    );
    cli.ok(&["trigger", "delete", "alert"]);
    let (status, _) = post(port, "alert", &[("authorization", &bearer)], "");
    assert_eq!(status, 404);
    // The signing secret deleted: the server's fault, said as such.
    db.ok(&["admin", "secret", "delete", "acme", "hook"]);
    let signature = sign(body);
    let (status, answer) = post(
        port,
        "push",
        &[
            ("x-hub-signature-256", &signature),
            ("x-github-delivery", "d9"),
        ],
        body,
    );
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("no longer exists"),
        "{answer}"
    );
    // Bad definitions are refused with what to do.
    let no_secret = cli.fails(&[
        "trigger",
        "create",
        "x",
        "kit",
        "noop3",
        "--secret-hmac",
        "nope",
    ]);
    assert!(no_secret.contains("no secret named 'nope'"), "{no_secret}");
    let audit = db.ok(&["audit", "--tenant", "acme", "--json", "--limit", "100"]);
    assert!(audit.contains("trigger.create") && audit.contains("trigger.delete"));
}

fn a_request_cut_by_kill9_and_retried_starts_one_execution(db: Db) {
    let (server, _cli, port) = setup(&db);
    let mut server = Some(server);
    for round in 0..4u64 {
        let body = format!(r#"{{"key":"k{round}"}}"#);
        let signature = sign(&body);
        let delivery = format!("cut-{round}");
        // The request goes out; the server is killed while it is handled
        // (or just before, or just after: the moment varies by round).
        let sender = {
            let (body, signature, delivery) = (body.clone(), signature.clone(), delivery.clone());
            std::thread::spawn(move || {
                std::panic::catch_unwind(|| {
                    post(
                        port,
                        "push",
                        &[
                            ("x-hub-signature-256", &signature),
                            ("x-delivery-id", &delivery),
                        ],
                        &body,
                    )
                })
                .ok()
            })
        };
        std::thread::sleep(Duration::from_millis(round * 3));
        server.take().unwrap().kill9();
        let _ = sender.join();
        // The client retries with the same delivery id until it is answered.
        server = Some(db.serve_api(port, &[]));
        let deadline = Instant::now() + WAIT;
        let answer = loop {
            let (status, answer) = post(
                port,
                "push",
                &[
                    ("x-hub-signature-256", &signature),
                    ("x-delivery-id", &delivery),
                ],
                &body,
            );
            if status == 200 || status == 202 {
                break answer;
            }
            assert!(Instant::now() < deadline, "{status} {answer}");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(answer["execution"].is_string(), "{answer}");
        assert_eq!(
            count(&db, &format!("trigger:push:{delivery}")),
            1,
            "one execution for delivery {delivery}"
        );
    }
}
