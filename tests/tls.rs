//! TLS of `cerebelum serve` (issue 19), end to end: real servers with
//! certificates of a test CA made here (rcgen), the real CLI over
//! `https://`, plaintext clients refused, the certificate replaced on
//! SIGHUP and on a file change while a watch stream stays open, client
//! certificates, and the rule that plaintext stays on loopback.

use cerebelum_harness as common;
use common::WAIT;

use common::ca::Ca;
use common::{Db, Remote, free_port, guest, path};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

fn https(port: u16) -> String {
    format!("https://127.0.0.1:{port}")
}

fn tls_flags(pair: &common::ca::Pair) -> [&str; 4] {
    ["--tls-cert", path(&pair.cert), "--tls-key", path(&pair.key)]
}

/// `GET path` over TLS (HTTP/1.1), trusting `ca`: the status line and body.
fn https_get(port: u16, ca: &std::path::Path, target: &str) -> String {
    https_request(
        port,
        ca,
        &format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
    )
}

/// `request` (HTTP/1.1, whole) over TLS, trusting `ca`: the whole answer.
fn https_request(port: u16, ca: &std::path::Path, request: &str) -> String {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut reply = Vec::new();
        // A server may end TLS without close_notify after `Connection: close`.
        let _ = tls.read_to_end(&mut reply).await;
        String::from_utf8_lossy(&reply).into_owned()
    })
}

#[test]
fn the_cli_works_over_tls_and_plaintext_clients_are_refused() {
    let db = Db::new();
    let key = db.tenant("acme", &[]);
    let dir = db.dir.path();
    let ca = Ca::new(dir, "ca");
    let pair = ca.server(dir, "server");
    let port = free_port();
    let mut server = db.serve_api(port, &tls_flags(&pair));

    let cli = Remote::at(&https(port), &key, &["--ca-cert", path(&ca.cert)]);
    cli.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
    let id = cli
        .ok(&["start", "kit", "noop3", "--input", r#"{"n":1}"#])
        .trim()
        .to_owned();
    let status = cli.wait_ended(&id, WAIT);
    assert_eq!(status["status"], "completed", "{status}");

    // A client that does not trust the CA refuses the server.
    let untrusted = Remote::at(&https(port), &key, &[]).fails(&["packages"]);
    assert!(
        untrusted.contains("cannot reach") && untrusted.contains("--ca-cert"),
        "{untrusted}"
    );
    let other = Ca::new(dir, "other");
    let wrong_ca = Remote::at(&https(port), &key, &["--ca-cert", path(&other.cert)]);
    assert!(wrong_ca.fails(&["packages"]).contains("cannot reach"));

    // Plaintext to the TLS port: no answer but a closed connection.
    let plain = Remote::at(&format!("http://127.0.0.1:{port}"), &key, &[]).fails(&["packages"]);
    assert!(!plain.is_empty());
    let raw = {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut reply = Vec::new();
        let _ = tcp.read_to_end(&mut reply);
        reply
    };
    assert!(
        !raw.starts_with(b"HTTP/"),
        "plain HTTP got an answer: {}",
        String::from_utf8_lossy(&raw)
    );

    // The console and /metrics are behind the same TLS.
    let metrics = https_get(port, &ca.cert, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("cerebelum_"), "{metrics}");
    let login = https_get(port, &ca.cert, "/login");
    assert!(login.starts_with("HTTP/1.1 200"), "{login}");
    // Signed in over TLS, the session cookie is Secure.
    let form = format!("key={key}");
    let signed_in = https_request(
        port,
        &ca.cert,
        &format!(
            "POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
            form.len()
        ),
    );
    let cookie = signed_in
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {signed_in}"));
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("; Secure"),
        "{cookie}"
    );

    // CA flags with an http:// server are a mistake, said before sending.
    let mixed = Remote::at(
        &format!("http://127.0.0.1:{port}"),
        &key,
        &["--ca-cert", path(&ca.cert)],
    );
    assert!(
        mixed
            .fails(&["packages"])
            .contains("are for https:// servers")
    );
    let log = server.log();
    assert!(log.contains("TLS handshake failed"), "{log}");
}

/// Runs `cli` until it succeeds (the server reloads within a few seconds).
fn until_ok(cli: &Remote, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cli.run(&["packages"]).status.success() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_new_certificate_is_served_without_dropping_open_streams() {
    let db = Db::new();
    let key = db.tenant("acme", &[]);
    let dir = db.dir.path();
    let (first, second, third) = (
        Ca::new(dir, "first"),
        Ca::new(dir, "second"),
        Ca::new(dir, "third"),
    );
    let pair = first.server(dir, "server");
    let port = free_port();
    let mut server = db.serve_api(port, &tls_flags(&pair));
    let url = https(port);
    let trusting = |ca: &Ca| Remote::at(&url, &key, &["--ca-cert", path(&ca.cert)]);
    let cli = trusting(&first);
    cli.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
    let id = cli
        .ok(&["start", "kit", "approval", "--input", r#"{"key":"go"}"#])
        .trim()
        .to_owned();
    cli.wait_text(&["status", &id], WAIT, |s| {
        s.contains("waiting for approval")
    });
    // A watch on a connection made with the first certificate.
    // (Its events go to stderr, the outcome to stdout.)
    let outcome = dir.join("watch.out");
    let mut watch = cli
        .command(&["watch", &id])
        .stdout(std::fs::File::create(&outcome).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stderr = watch.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let _ = lines_tx.send(line.unwrap());
        }
    });
    // Its first line names the console page; the next comes from the
    // stream, which is open then.
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(
            lines
                .recv_timeout(WAIT)
                .expect("the watch printed no event"),
        );
    }

    // SIGHUP after the files were replaced: new connections get the new one.
    second.server(dir, "server");
    server.hangup();
    until_ok(
        &trusting(&second),
        "the server kept the first certificate after SIGHUP",
    );
    assert!(
        trusting(&first)
            .fails(&["packages"])
            .contains("cannot reach"),
        "a new connection still got the first certificate"
    );
    // A change on disk alone is noticed too.
    third.server(dir, "server");
    until_ok(&trusting(&third), "the server did not notice the new files");
    // A broken file: logged, and the certificate in use stays.
    std::fs::write(dir.join("server.pem"), "not a certificate").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server.log().contains("not usable") {
        assert!(Instant::now() < deadline, "{}", server.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    trusting(&third).ok(&["packages"]);

    // The watch opened before all this still streams: it sees the end.
    trusting(&third).ok(&["approve", &id, "go"]);
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = watch.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the watch did not end");
        std::thread::sleep(Duration::from_millis(50));
    };
    seen.extend(lines.try_iter());
    assert!(status.success(), "the watch failed: {seen:?}");
    let outcome = std::fs::read_to_string(&outcome).unwrap();
    assert!(
        outcome.contains(r#""decision":"approved""#),
        "the watch did not see the end: {outcome}\n{seen:?}"
    );
}

#[test]
fn client_certificates_are_required_with_a_client_ca() {
    let db = Db::new();
    let key = db.tenant("acme", &[]);
    let dir = db.dir.path();
    let ca = Ca::new(dir, "ca");
    let clients = Ca::new(dir, "clients");
    let strangers = Ca::new(dir, "strangers");
    let pair = ca.server(dir, "server");
    let port = free_port();
    let mut flags = tls_flags(&pair).to_vec();
    flags.extend(["--tls-client-ca", path(&clients.cert)]);
    let _server = db.serve_api(port, &flags);
    let url = https(port);
    let with = |extra: &[&str]| {
        let mut flags = vec!["--ca-cert", path(&ca.cert)];
        flags.extend_from_slice(extra);
        Remote::at(&url, &key, &flags)
    };
    // (TLS 1.3 tells the client after its handshake: the call fails.)
    with(&[]).fails(&["packages"]);
    let stranger = strangers.client(dir, "stranger");
    let refused = with(&[
        "--client-cert",
        path(&stranger.cert),
        "--client-key",
        path(&stranger.key),
    ]);
    refused.fails(&["packages"]);
    let member = clients.client(dir, "member");
    let accepted = with(&[
        "--client-cert",
        path(&member.cert),
        "--client-key",
        path(&member.key),
    ]);
    accepted.ok(&["packages"]);
    // The API key is still checked behind the certificate.
    let flags: Vec<&str> = accepted.flags.iter().map(String::as_str).collect();
    let wrong_key = Remote::at(&url, "cbk_00000000_nope", &flags);
    assert!(
        wrong_key
            .fails(&["packages"])
            .contains("invalid or revoked API key")
    );
    let half = with(&["--client-cert", path(&member.cert)]).fails(&["packages"]);
    assert!(half.contains("go together"), "{half}");
}

#[test]
fn serve_keeps_plaintext_on_loopback_and_says_what_is_wrong_with_tls_files() {
    let db = Db::new();
    let refused = db.fails(&["serve", "--listen", "0.0.0.0:0"]);
    assert!(
        refused.contains("refusing to listen on 0.0.0.0:0 without TLS")
            && refused.contains("--insecure-plaintext")
            && refused.contains("--tls-cert"),
        "{refused}"
    );
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let _server = db.serve_logged(&["--listen", &listen, "--insecure-plaintext"], None);
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "--insecure-plaintext did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let dir = db.dir.path();
    let missing = dir.join("missing.pem");
    let no_file = db.fails(&[
        "serve",
        "--tls-cert",
        path(&missing),
        "--tls-key",
        path(&missing),
    ]);
    assert!(
        no_file.contains("cannot read the TLS certificate (--tls-cert)")
            && no_file.contains("missing.pem"),
        "{no_file}"
    );
    let ca = Ca::new(dir, "ca");
    let a = ca.server(dir, "a");
    let b = ca.server(dir, "b");
    let mismatch = db.fails(&[
        "serve",
        "--tls-cert",
        path(&a.cert),
        "--tls-key",
        path(&b.key),
    ]);
    assert!(
        mismatch.contains("does not go with the certificate"),
        "{mismatch}"
    );
    let not_pem = db.fails(&[
        "serve",
        "--tls-cert",
        path(&a.key),
        "--tls-key",
        path(&a.key),
    ]);
    assert!(not_pem.contains("holds no certificate"), "{not_pem}");
    let alone = db.fails(&["serve", "--tls-cert", path(&a.cert)]);
    assert!(alone.contains("--tls-key"), "{alone}");
}
