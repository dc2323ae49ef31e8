//! Fencing under a real network cut: a `cerebelum serve` node runs in a
//! network namespace whose only way to PostgreSQL is a veth link to the
//! host (and a TCP forwarder on the host's end of it); the link goes down
//! while the node drives executions, another node takes them over once the
//! lease ran out, and when the link comes back the cut-off node's stale
//! appends are refused.
//!
//! Needs root (`ip netns add`, `ip link`); without it the test says so and
//! passes without running.

use cerebelum_harness as common;

use common::{Db, assert_consistent, bin, cache_dir, entries, guest, now_ms};
use serde_json::{Value, json};
use sqlx::Connection;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);
const LEASE_MS: &str = "1000";
/// What the engine logs when an append is refused because another node
/// claimed the execution (`executor/drive.rs`).
const LOST: &str = "lost ownership: the execution was claimed again under a newer lease";
/// What the engine says of a write PostgreSQL did not answer in time
/// (`store/postgres.rs`, `WRITE_DEADLINE`).
const GAVE_UP: &str = "PostgreSQL did not answer";

/// Runs `ip` with `args`; its stderr if it failed.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The names and addresses of namespace `k` of test process `pid`: a
/// link-local /30 derived from both, so concurrent tests and runs do not
/// clash (169.254.169.254 is left alone).
struct Names {
    netns: String,
    host_veth: String,
    ns_veth: String,
    /// The /30 of the link, which a blackhole route keeps on the host while
    /// the link is down (so nothing leaks to the default route).
    subnet: String,
    host_ip: String,
    ns_ip: String,
}

impl Names {
    fn of(pid: u32, k: u32) -> Self {
        let n = (pid.wrapping_mul(4).wrapping_add(k)) % (250 * 64);
        let third = match 1 + n / 64 {
            169 => 251,
            t => t,
        };
        let fourth = (n % 64) * 4;
        Self {
            netns: format!("cb-fence-{pid}-{k}"),
            host_veth: format!("cbf{pid}-{k}h"),
            ns_veth: format!("cbf{pid}-{k}n"),
            subnet: format!("169.254.{third}.{fourth}/30"),
            host_ip: format!("169.254.{third}.{}", fourth + 1),
            ns_ip: format!("169.254.{third}.{}", fourth + 2),
        }
    }

    /// Removes whatever exists of it.
    fn remove(&self) {
        let _ = ip(&["netns", "del", &self.netns]);
        let _ = ip(&["link", "del", &self.host_veth]);
        let _ = ip(&["route", "del", "blackhole", &self.subnet, "metric", "4000"]);
    }
}

/// A network namespace joined to the host by a veth pair, with a TCP
/// forwarder on the host's address to the tests' PostgreSQL (which listens
/// on loopback only, out of the namespace's reach); all of it is removed
/// when dropped, panic or not.
struct Netns {
    names: Names,
    /// The forwarder's runtime, shut down when dropped.
    forwarder: Option<tokio::runtime::Runtime>,
    /// The forwarder's port on the host's address.
    port: u16,
    /// Connections the forwarder accepted.
    accepted: Arc<AtomicUsize>,
}

impl Netns {
    /// The namespace, forwarding to `pg` (HOST:PORT), or `None` if this
    /// machine does not let us create one.
    fn create(pg: String) -> Option<Self> {
        // What runs killed before their clean-up left behind.
        if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let Some((pid, k)) = line
                    .split_whitespace()
                    .next()
                    .and_then(|name| name.strip_prefix("cb-fence-"))
                    .and_then(|rest| rest.split_once('-'))
                    .and_then(|(pid, k)| Some((pid.parse::<u32>().ok()?, k.parse::<u32>().ok()?)))
                else {
                    continue;
                };
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    Names::of(pid, k).remove();
                }
            }
        }
        // Namespaces of one process are told apart by a count (its tests
        // run side by side).
        static MADE: AtomicU32 = AtomicU32::new(0);
        let names = Names::of(std::process::id(), MADE.fetch_add(1, Ordering::SeqCst) % 4);
        names.remove();
        if let Err(e) = ip(&["netns", "add", &names.netns]) {
            eprintln!(
                "SKIPPED: this test needs to create a network namespace (run it as root): {e}"
            );
            return None;
        }
        let mut netns = Self {
            names,
            forwarder: None,
            port: 0,
            accepted: Arc::new(AtomicUsize::new(0)),
        };
        let n = &netns.names;
        let host_cidr = format!("{}/30", n.host_ip);
        let ns_cidr = format!("{}/30", n.ns_ip);
        for args in [
            vec![
                "link",
                "add",
                &n.host_veth,
                "type",
                "veth",
                "peer",
                "name",
                &n.ns_veth,
                "netns",
                &n.netns,
            ],
            vec!["addr", "add", &host_cidr, "dev", &n.host_veth],
            vec!["link", "set", &n.host_veth, "up"],
            vec!["route", "add", "blackhole", &n.subnet, "metric", "4000"],
            vec!["-n", &n.netns, "link", "set", "lo", "up"],
            vec!["-n", &n.netns, "addr", "add", &ns_cidr, "dev", &n.ns_veth],
            vec!["-n", &n.netns, "link", "set", &n.ns_veth, "up"],
        ] {
            ip(&args).unwrap_or_else(|e| panic!("setting up the namespace: {e}"));
        }
        netns.forward(pg);
        Some(netns)
    }

    /// Forwards every connection to the host's address (on a free port)
    /// to `target`.
    fn forward(&mut self, target: String) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind((
                self.names.host_ip.as_str(),
                0,
            )))
            .unwrap();
        self.port = listener.local_addr().unwrap().port();
        let accepted = self.accepted.clone();
        runtime.spawn(async move {
            loop {
                let mut inbound = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let target = target.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        self.forwarder = Some(runtime);
    }

    /// What node A's `--db` names: the forwarder.
    fn address(&self) -> String {
        format!("{}:{}", self.names.host_ip, self.port)
    }

    /// Cuts the link (its host side goes down): packets are dropped both
    /// ways, so open connections hang, and new ones fail once ARP gives up,
    /// as across a real cut; none is reset.
    fn cut(&self) {
        ip(&["link", "set", &self.names.host_veth, "down"]).unwrap();
    }

    fn restore(&self) {
        ip(&["link", "set", &self.names.host_veth, "up"]).unwrap();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Some(runtime) = self.forwarder.take() {
            runtime.shutdown_background();
        }
        self.names.remove();
    }
}

/// A `cerebelum serve` process started by this test; killed when dropped.
struct Node {
    child: Child,
    log: PathBuf,
}

impl Node {
    fn log(&self) -> String {
        read_log(&self.log)
    }

    /// Its log's warnings and errors, without colours.
    fn warnings(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .map(common::plain)
            .collect()
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `url` (postgres://[USER@]HOST[:PORT]/DB...) split into its TCP address
/// and the same URL with that address replaced by `{}`.
fn split_pg_url(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").expect("a postgres:// URL");
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (user, address) = match authority.rsplit_once('@') {
        Some((user, address)) => (format!("{user}@"), address),
        None => (String::new(), authority),
    };
    let address = if address.contains(':') {
        address.to_owned()
    } else {
        format!("{address}:5432")
    };
    (address, format!("{scheme}://{user}{{}}{tail}"))
}

/// Step calls of a journal that have their result.
fn steps_done(journal: &[Value]) -> usize {
    let calls: Vec<i64> = entries(journal, "call-step")
        .iter()
        .map(|c| c["seq"].as_i64().unwrap())
        .collect();
    entries(journal, "result")
        .iter()
        .filter(|r| calls.contains(&r["ref_seq"].as_i64().unwrap_or(-1)))
        .count()
}

/// A `serve` node inside `netns`: PostgreSQL (`url_template` with the
/// address left as `{}`) through the link only; its log in `log`.
fn node_in(netns: &Netns, db: &Db, url_template: &str, log: &Path) -> Node {
    let url = url_template.replace("{}", &netns.address());
    Node {
        child: Command::new("ip")
            .args(["netns", "exec", &netns.names.netns, bin(), "--db", &url])
            .args(["serve", "--lease-ms", LEASE_MS, "--tick-ms", "20"])
            .args(["--listen", "127.0.0.1:0"])
            .env(
                "CEREBELUM_MASTER_KEY_FILE",
                db.dir.path().join("master.key"),
            )
            .env("CEREBELUM_CACHE_DIR", cache_dir())
            .env("CEREBELUM_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("spawning cerebelum serve in the namespace"),
        log: log.to_owned(),
    }
}

/// Starts `n` executions of `naps`, of `steps` 200 ms steps each.
fn start_naps(db: &Db, n: usize, steps: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            db.ok(&[
                "start",
                "testkit",
                "naps",
                "--input",
                &json!({ "n": steps, "sleep_ms": 200 }).to_string(),
            ])
            .trim()
            .to_owned()
        })
        .collect()
}

/// Polls `ready` every 50 ms until it holds; panics with `what` and node
/// A's log after `timeout`.
fn wait_until(node: &mut Node, timeout: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}; node A's log:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(node.is_running(), "node A exited; its log:\n{}", node.log());
}

/// A test's start: node A in its namespace, midway through executions
/// of ten 200 ms steps it alone claimed. Dropped in field order: A is
/// killed before its namespace goes.
struct Midway {
    node_a: Node,
    netns: Netns,
    db: Db,
    log_a: PathBuf,
    ids: Vec<String>,
    n_steps: usize,
}

/// [`Midway`] with `executions` executions, or `None` where no namespace
/// can be made. They are started before A, so that it claims them
/// together and they go on in step, however slow the machine is to start
/// each.
fn midway(executions: usize) -> Option<Midway> {
    let db = Db::postgres();
    let (pg_address, url_template) = split_pg_url(&db.url);
    let netns = Netns::create(pg_address)?;
    db.ok(&[
        "upload",
        guest("testkit").to_str().unwrap(),
        "--name",
        "testkit",
    ]);
    let n_steps = 10;
    let ids = start_naps(&db, executions, n_steps);
    let log_a = db.dir.path().join("node-a.log");
    let mut node_a = node_in(&netns, &db, &url_template, &log_a);
    wait_until(
        &mut node_a,
        LONG,
        "A is midway through every execution",
        || ids.iter().all(|id| steps_done(&db.journal(id)) >= 2),
    );
    Some(Midway {
        node_a,
        netns,
        db,
        log_a,
        ids,
        n_steps,
    })
}

/// Cut off past its lease, a node is taken over; back, it journals nothing and logs the loss.
#[test]
fn a_node_cut_off_from_postgres_is_fenced() {
    let Some(Midway {
        mut node_a,
        netns,
        db,
        log_a,
        ids,
        n_steps,
    }) = midway(4)
    else {
        return;
    };
    // The cut, then a look at what A left: looked at before the cut, an
    // execution could still finish on A while the others were read (a
    // few CLI calls, seconds on a loaded machine; it did once, and then
    // was never taken over).
    netns.cut();
    let cut_at = now_ms();
    let before: Vec<Value> = ids.iter().map(|id| db.status(id)).collect();
    for (id, status) in ids.iter().zip(&before) {
        assert_eq!(status["status"], "running", "{id} runs on A at the cut");
        let done = steps_done(&db.journal(id));
        assert!(
            done < n_steps,
            "{id} was not midway at the cut ({done} steps done): the test looked too late"
        );
    }
    let owner_a = before[0]["owner"].clone();
    assert!(owner_a.is_string(), "A owns the executions: {before:?}");
    assert!(
        before.iter().all(|s| s["owner"] == owner_a),
        "A alone owns them: {before:?}"
    );
    assert!(
        netns.accepted.load(Ordering::SeqCst) > 0,
        "A reached PostgreSQL through the link"
    );

    // Node B starts on the host and takes the executions over once A's
    // lease has run out.
    let log_b = db.dir.path().join("node-b.log");
    let _node_b = db.serve_logged(&["--lease-ms", LEASE_MS], Some(&log_b));
    let mut finished = Vec::new();
    for id in &ids {
        let deadline = Instant::now() + LONG;
        let status = loop {
            let status = db.status(id);
            if status["status"] == "completed" {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{id} was not completed by B: {status}\nB's log:\n{}",
                read_log(&log_b)
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        finished.push(status);
    }
    let took_over_ms = now_ms() - cut_at;
    let journals: Vec<Vec<Value>> = ids.iter().map(|id| db.journal(id)).collect();
    let rows = db.scalar("SELECT COUNT(*) FROM journal");
    for (i, id) in ids.iter().enumerate() {
        assert_ne!(finished[i]["owner"], owner_a, "{id}: B completed it");
        assert!(
            finished[i]["epoch"].as_i64() > before[i]["epoch"].as_i64(),
            "{id}: B claimed it under a new epoch; before the cut {}, after {}",
            before[i],
            finished[i]
        );
        assert_eq!(finished[i]["result"], json!(n_steps), "{id}");
        assert_consistent(id, &journals[i]);
        assert_eq!(steps_done(&journals[i]), n_steps, "{id}");
    }

    assert!(
        !read_log(&log_a).contains(LOST),
        "A heard of the takeover while its link was down: the cut was not real"
    );

    // The link comes back: A's appends, queued or hanging since the cut,
    // reach PostgreSQL and are refused.
    netns.restore();
    let restored_at = Instant::now();
    wait_until(
        &mut node_a,
        LONG,
        "A logs that it lost every execution",
        || {
            let log = read_log(&log_a);
            ids.iter().all(|id| {
                log.lines()
                    .any(|line| line.contains(LOST) && line.contains(id.as_str()))
            })
        },
    );
    let refused_after = restored_at.elapsed();
    // Anything else A had to say has had time to arrive.
    std::thread::sleep(Duration::from_secs(1));
    for (i, id) in ids.iter().enumerate() {
        let after = db.journal(id);
        assert_eq!(
            after, journals[i],
            "{id}: A appended to the journal under its stale lease"
        );
        assert_consistent(id, &after);
        let status = db.status(id);
        assert_eq!(status["status"], "completed", "{id}");
        assert_eq!(status["epoch"], finished[i]["epoch"], "{id}");
    }
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM journal"),
        rows,
        "no journal row was added after B completed the executions"
    );
    assert!(
        node_a.is_running(),
        "A is still serving after losing its executions:\n{}",
        node_a.log()
    );
    let warnings = node_a.warnings();
    eprintln!(
        "B completed all {} executions {took_over_ms} ms after the cut; A's stale appends were \
         refused {} ms after the link came back; A's warnings:\n{}",
        ids.len(),
        refused_after.as_millis(),
        warnings.join("\n")
    );
}

/// What a node logged so far (nothing before it created its log).
fn read_log(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => panic!("reading {}: {e}", path.display()),
    }
}

/// Cut off for good while PostgreSQL works on its writes, a node gives
/// them up after the deadline instead of waiting for the kernel to give up
/// the connection (about 15 minutes); once back, it claims its executions
/// again and finishes them from the journal, which holds what those writes
/// committed after the cut, each step's result once.
///
/// To have a write in flight at the cut, the test holds a lock on the
/// executions' rows: A's next commit (and lease renewal) waits for it in
/// PostgreSQL. The link goes down, the lock is let go, and the writes
/// commit on the server while their answers cannot reach A.
#[test]
fn a_node_cut_off_for_good_gives_up_its_writes() {
    let Some(mut m) = midway(2) else {
        return;
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut lock = runtime.block_on(async {
        let mut conn = sqlx::PgConnection::connect(&m.db.url).await.unwrap();
        // A's group commit may lock the same rows in the other order in
        // one transaction: PostgreSQL then breaks the deadlock by failing
        // one of the two (once, this one), and the lock is taken again.
        for attempt in 1.. {
            sqlx::raw_sql("BEGIN").execute(&mut conn).await.unwrap();
            let locked = sqlx::query("SELECT id FROM executions WHERE id = ANY($1) FOR UPDATE")
                .bind(&m.ids)
                .execute(&mut conn)
                .await;
            match locked {
                Ok(_) => break,
                Err(e) if attempt < 5 && e.to_string().contains("deadlock") => {
                    sqlx::raw_sql("ROLLBACK").execute(&mut conn).await.unwrap();
                }
                Err(e) => panic!("locking the executions' rows: {e}"),
            }
        }
        conn
    });
    wait_until(&mut m.node_a, LONG, "A's commit waits for the lock", || {
        m.db.scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name = 'cerebelum' AND wait_event_type = 'Lock'",
        ) > 0
    });
    m.netns.cut();
    let cut_at = Instant::now();
    runtime.block_on(async {
        sqlx::raw_sql("COMMIT").execute(&mut lock).await.unwrap();
    });
    wait_until(
        &mut m.node_a,
        LONG,
        "A gives up the writes it waits for",
        || read_log(&m.log_a).contains(GAVE_UP),
    );
    let gave_up_after = cut_at.elapsed();
    assert!(
        gave_up_after < Duration::from_secs(30),
        "A gave up {gave_up_after:?} after the cut (the deadline is 10 s)"
    );

    // Back, A claims them again and finishes them.
    m.netns.restore();
    let restored_at = Instant::now();
    for id in &m.ids {
        wait_until(&mut m.node_a, LONG, "A finishes the executions", || {
            m.db.status(id)["status"] == "completed"
        });
        let status = m.db.status(id);
        assert_eq!(status["result"], json!(m.n_steps), "{id}: {status}");
        let journal = m.db.journal(id);
        assert_consistent(id, &journal);
        assert_eq!(steps_done(&journal), m.n_steps, "{id}");
    }
    let warnings = m.node_a.warnings();
    eprintln!(
        "A gave up its writes {} ms after the cut and finished its executions {} ms after the \
         link came back; A's warnings:\n{}",
        gave_up_after.as_millis(),
        restored_at.elapsed().as_millis(),
        warnings.join("\n")
    );
}
