//! Shared harness of the end-to-end tests and the benchmarks, one crate
//! compiled once for all of them (tests use it as `common`): builds the
//! guest packages once (cargo's lock makes concurrent builds wait), runs the
//! real `cerebelum` binary on a temporary SQLite file or a fresh PostgreSQL
//! database, starts and kills `cerebelum serve` processes.
//!
//! PostgreSQL tests use the server named by `CEREBELUM_TEST_PG` (default
//! `postgres://postgres@127.0.0.1:5432/test`): each test creates a database
//! of its own there and drops it when done. A test that cannot reach the
//! server fails, saying so: it is never skipped.

pub mod ca;
pub mod fuzz;
pub mod grpc;
pub mod http_server;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Limits of the attacking tenant in the hostile suite and benchmark:
/// small enough that every attack of `tests/hostile/` meets one quickly.
pub const HOSTILE_LIMITS: &[&str] = &[
    "--cpu-ms",
    "2000",
    "--memory-mb",
    "128",
    "--max-payload-kb",
    "1024",
    "--max-journal-entries",
    "2000",
    "--max-output-kb",
    "64",
    "--max-concurrency",
    "1",
    "--max-journal-rate",
    "1000",
];

/// How long a test waits for something that should happen (an
/// execution to reach a status, a server to answer) before it fails.
pub const WAIT: Duration = Duration::from_secs(60);

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

/// The compiled-component cache shared by every test and benchmark run.
pub fn cache_dir() -> PathBuf {
    root().join("target").join("cerebelum-cache")
}

/// The id of the execution `cerebelum run` started, from its stderr (the
/// line `execution ID of PACKAGE ...`; a line before it may say that the
/// package is being compiled).
pub fn run_execution_id(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("execution "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("`run` names no execution:\n{stderr}"))
        .to_owned()
}

/// Builds the example and test guests for wasm32-wasip2 (once per process)
/// and returns the directory holding `<name>.wasm`.
pub fn guest_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let packages = ["hello", "deploy", "testkit", "not-a-package", "hostile"];
        build_guests("guests", &["--profile", "guest"], &packages, None)
            .join("wasm32-wasip2")
            .join("guest")
    })
}

/// Builds `packages` for wasm32-wasip2 with `cargo build` and `flags`,
/// into `target/<dir>` (with environment variable `env` set, if any); the
/// target directory.
fn build_guests(
    dir: &str,
    flags: &[&str],
    packages: &[&str],
    env: Option<(&str, &str)>,
) -> PathBuf {
    let target_dir = root().join("target").join(dir);
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .current_dir(root())
        .args(["build", "--quiet", "--target", "wasm32-wasip2"])
        .args(flags)
        .args(packages.iter().flat_map(|p| ["-p", p]))
        .env("CARGO_TARGET_DIR", &target_dir);
    if let Some((name, value)) = env {
        cargo.env(name, value);
    }
    let status = cargo.status().expect("running cargo to build guests");
    assert!(
        status.success(),
        "building the guest packages {packages:?} failed"
    );
    target_dir
}

/// Path of a guest package built by [`guest_dir`].
pub fn guest(name: &str) -> PathBuf {
    let path = guest_dir().join(format!("{name}.wasm"));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// The test guest every suite drives (`tests/guests/testkit`).
pub fn kit() -> PathBuf {
    guest("testkit")
}

/// The test kit built another way (once per process): a debug build, with
/// line tables, whose `steps_then_wait` gives its steps other input
/// (`CEREBELUM_TESTKIT_VARIANT=diverge`), so a replay of a kit execution
/// against it diverges at a known line of `tests/guests/testkit/src/lib.rs`.
pub fn kit_variant() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let variant = Some(("CEREBELUM_TESTKIT_VARIANT", "diverge"));
        build_guests("guests-variant", &[], &["testkit"], variant)
            .join("wasm32-wasip2/debug/testkit.wasm")
    })
    .clone()
}

/// The Python that builds Python packages: `CEREBELUM_PYTHON`, else the
/// repository's `.venv` (which `scripts/test.sh` creates with the SDK and
/// componentize-py).
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("CEREBELUM_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = root().join(".venv").join("bin").join("python");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/test.sh (it creates the virtual environment with the \
         Python SDK and componentize-py) or set CEREBELUM_PYTHON",
        venv.display()
    );
    venv
}

/// Builds the Python file `rel` (relative to the workspace root) into a
/// package with `cerebelum build`, once per content of the file, the SDK
/// and the WIT: builds take ~10 s, so they are kept in `target/`.
pub fn python_guest(rel: &str) -> PathBuf {
    use sha2::{Digest, Sha256};
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
    let source = root().join(rel);
    let mut inputs = vec![source.clone(), root().join("wit").join("cerebelum.wit")];
    let sdk = root().join("guest-sdk").join("python").join("cerebelum");
    let mut sdk_files: Vec<PathBuf> = [sdk.clone(), sdk.join("dsl")]
        .iter()
        .flat_map(|dir| std::fs::read_dir(dir).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "py"))
        .collect();
    sdk_files.sort();
    inputs.extend(sdk_files);
    let mut hash = Sha256::new();
    for file in &inputs {
        hash.update(std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display())));
    }
    let stem = source.file_stem().unwrap().to_str().unwrap();
    let dir = root().join("target").join("python-guests");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!(
        "{stem}-{}.wasm",
        &hex::encode(hash.finalize())[..16]
    ));
    if out.exists() {
        return out;
    }
    let partial = dir.join(format!("{stem}.{}.partial.wasm", std::process::id()));
    let built = Command::new(bin())
        .args(["build", path(&source), "-o", path(&partial), "--python"])
        .arg(python())
        .output()
        .expect("running cerebelum build");
    assert!(
        built.status.success(),
        "cerebelum build {rel} failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    std::fs::rename(&partial, &out).unwrap();
    out
}

/// A path as a command-line argument.
pub fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `engine`'s scheduler on a task until the returned sender fires.
pub fn serve_in_process(
    engine: &cerebelum::Engine,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<cerebelum::Result<()>>,
) {
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let engine = engine.clone();
    let server = tokio::spawn(async move {
        engine
            .serve(async {
                let _ = stop_rx.await;
            })
            .await
    });
    (stop, server)
}

/// The `cerebelum` binary under test: this build's (cargo builds it
/// beside the test or benchmark running: `target/PROFILE/cerebelum`
/// for `target/PROFILE/deps/TEST-HASH`), or the one `CEREBELUM_TEST_BIN`
/// names (to run the process-level tests against another build, e.g. one
/// from before a fix, and see them fail).
pub fn bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(bin) = std::env::var("CEREBELUM_TEST_BIN") {
            return bin;
        }
        let exe = std::env::current_exe().expect("the path of the running test");
        let bin = exe
            .ancestors()
            .nth(2)
            .map(|profile| profile.join("cerebelum"))
            .filter(|bin| bin.exists())
            .unwrap_or_else(|| {
                panic!(
                    "no `cerebelum` binary beside {}: run the tests with cargo, or name \
                     one with CEREBELUM_TEST_BIN",
                    exe.display()
                )
            });
        bin.to_string_lossy().into_owned()
    })
}

/// Where the PostgreSQL tests create their databases.
pub fn test_pg_url() -> String {
    std::env::var("CEREBELUM_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// `url` with its database name replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let authority_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[authority_end..].find('/') {
        Some(i) => &base[..authority_end + i],
        None => base,
    };
    format!("{base}/{database}{query}")
}

/// Runs `future` on a runtime and a thread of its own (so it works from
/// sync and async tests alike).
fn block_on_own_thread<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    })
    .join()
    .unwrap()
}

/// Runs `statement` on the PostgreSQL server of the tests (in the
/// database `CEREBELUM_TEST_PG` names).
pub fn pg_admin(statement: String) -> sqlx::Result<()> {
    let url = test_pg_url();
    block_on_own_thread(async move {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is needed by this test and is unreachable at {url}: {e}. \
                     Start it (see README) or point CEREBELUM_TEST_PG at a server."
                )
            });
        let done = sqlx::raw_sql(&statement).execute(&pool).await.map(|_| ());
        pool.close().await;
        done
    })
}

/// The database backends a test can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One fresh database: a SQLite file in a temporary directory, or a
/// PostgreSQL database of its own (dropped with this value).
pub struct Db {
    pub dir: tempfile::TempDir,
    /// The SQLite file (unused on PostgreSQL).
    pub path: PathBuf,
    /// What `--db` gets.
    pub url: String,
    pub backend: Backend,
    pg_name: Option<String>,
}

impl Default for Db {
    fn default() -> Self {
        Self::new()
    }
}

impl Db {
    /// A fresh SQLite database.
    pub fn new() -> Self {
        Self::on(Backend::Sqlite)
    }

    /// A fresh database on `backend`.
    pub fn on(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cerebelum.db");
        match backend {
            Backend::Sqlite => Self {
                url: path.to_str().unwrap().to_owned(),
                dir,
                path,
                backend,
                pg_name: None,
            },
            Backend::Postgres => {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let name = format!(
                    "cerebelum_test_{}_{}_{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed),
                    now_ms() % 1_000_000
                );
                pg_admin(format!("CREATE DATABASE {name}")).unwrap();
                // A PostgreSQL database has no file to keep a master key
                // beside: every command gets this one (see `command`).
                let (_, key) = cerebelum::secrets::MasterKey::generate().unwrap();
                std::fs::write(dir.path().join("master.key"), key).unwrap();
                Self {
                    url: with_database(&test_pg_url(), &name),
                    dir,
                    path,
                    backend,
                    pg_name: Some(name),
                }
            }
        }
    }

    /// A fresh PostgreSQL database.
    pub fn postgres() -> Self {
        Self::on(Backend::Postgres)
    }

    /// Moves this PostgreSQL database (before anything uses it) to
    /// `tablespace`, e.g. one on a small disk.
    pub fn set_tablespace(&self, tablespace: &str) {
        let name = self.pg_name.as_deref().expect("a PostgreSQL database");
        pg_admin(format!("ALTER DATABASE {name} SET TABLESPACE {tablespace}"))
            .unwrap_or_else(|e| panic!("moving {name} to tablespace {tablespace}: {e}"));
    }

    /// Runs SQL statements on this database directly (to tamper with it);
    /// returns the rows affected.
    pub fn sql(&self, statements: &str) -> u64 {
        self.try_sql(statements)
            .unwrap_or_else(|e| panic!("{statements}: {e}"))
    }

    /// [`Db::sql`], or the database's error.
    pub fn try_sql(&self, statements: &str) -> Result<u64, String> {
        let statements = statements.to_owned();
        let (backend, url) = match self.backend {
            Backend::Sqlite => (self.backend, format!("sqlite://{}", self.path.display())),
            Backend::Postgres => (self.backend, self.url.clone()),
        };
        block_on_own_thread(async move {
            let done = match backend {
                Backend::Sqlite => {
                    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
                    let done = sqlx::raw_sql(&statements).execute(&pool).await;
                    pool.close().await;
                    done.map(|d| d.rows_affected())
                }
                Backend::Postgres => {
                    let pool = sqlx::PgPool::connect(&url).await.unwrap();
                    let done = sqlx::raw_sql(&statements).execute(&pool).await;
                    pool.close().await;
                    done.map(|d| d.rows_affected())
                }
            };
            done.map_err(|e| e.to_string())
        })
    }

    /// The one integer `query` selects (e.g. a `COUNT(*)`), read from
    /// this database directly.
    pub fn scalar(&self, query: &str) -> i64 {
        match self.column::<i64>(query)[..] {
            [n] => n,
            ref other => panic!("{query}: {} rows, not one", other.len()),
        }
    }

    /// The one column `query` selects, row by row, read from this
    /// database directly.
    pub fn column<T>(&self, query: &str) -> Vec<T>
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Sqlite>
            + sqlx::Type<sqlx::Sqlite>
            + for<'r> sqlx::Decode<'r, sqlx::Postgres>
            + sqlx::Type<sqlx::Postgres>
            + Send
            + Unpin
            + 'static,
    {
        let owned = query.to_owned();
        let (backend, url) = match self.backend {
            Backend::Sqlite => (self.backend, format!("sqlite://{}", self.path.display())),
            Backend::Postgres => (self.backend, self.url.clone()),
        };
        block_on_own_thread(async move {
            match backend {
                Backend::Sqlite => {
                    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
                    let rows = sqlx::query_scalar::<_, T>(&owned).fetch_all(&pool).await;
                    pool.close().await;
                    rows
                }
                Backend::Postgres => {
                    let pool = sqlx::PgPool::connect(&url).await.unwrap();
                    let rows = sqlx::query_scalar::<_, T>(&owned).fetch_all(&pool).await;
                    pool.close().await;
                    rows
                }
            }
        })
        .unwrap_or_else(|e| panic!("{query}: {e}"))
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("--db").arg(&self.url).args(args);
        if self.backend == Backend::Postgres {
            c.env(
                "CEREBELUM_MASTER_KEY_FILE",
                self.dir.path().join("master.key"),
            );
        }
        c.env("CEREBELUM_CACHE_DIR", cache_dir());
        c.env("CEREBELUM_LOG", "warn");
        c
    }

    /// Runs a CLI command to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running cerebelum")
    }

    /// Runs a CLI command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "cerebelum {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a CLI command that must fail; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "cerebelum {args:?} should have failed; stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// Starts `workflow` of the package file `package`; returns the id.
    pub fn start(&self, package: &Path, workflow: &str, input: &str) -> String {
        self.ok(&[
            "start",
            package.to_str().unwrap(),
            workflow,
            "--input",
            input,
        ])
        .trim()
        .to_owned()
    }

    pub fn status(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["status", id, "--json"])).unwrap()
    }

    pub fn journal(&self, id: &str) -> Vec<Value> {
        serde_json::from_str(&self.ok(&["journal", id, "--json"])).unwrap()
    }

    /// Waits until `id` has status `status` (panics after `timeout`).
    pub fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> Value {
        self.wait_for(id, timeout, |s, _| s["status"] == status)
    }

    /// Waits until `pred(status, journal)` holds; returns the status.
    pub fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
        pred: impl Fn(&Value, &[Value]) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status(id);
            let journal = self.journal(id);
            if pred(&status, &journal) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting on {id}: status {status}\njournal: {}",
                serde_json::to_string_pretty(&journal).unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts `cerebelum serve` on this database (lease 1 s, tick 20 ms,
    /// gRPC on a free port unless `extra` sets them).
    pub fn serve(&self, extra: &[&str]) -> Server {
        self.serve_logged(extra, None)
    }

    /// Starts `cerebelum serve` with its gRPC API on 127.0.0.1:`port` and
    /// waits until it accepts connections; the server's URL is `url(port)`.
    /// Its `info` log is kept ([`Server::log`]).
    pub fn serve_api(&self, port: u16, extra: &[&str]) -> Server {
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["--listen", listen.as_str()];
        args.extend_from_slice(extra);
        let log = self.dir.path().join(format!("serve-{port}.log"));
        let mut server = self.serve_logged(&args, Some(&log));
        let deadline = Instant::now() + Duration::from_secs(60);
        // Ours listens once it has said so (it logs the line right after
        // binding): a connection alone could reach another process that
        // holds the port, and the test would then fail far from the cause.
        loop {
            let said = std::fs::read_to_string(&log).is_ok_and(|l| l.contains("cerebelum serving"));
            if said && std::net::TcpStream::connect(&listen).is_ok() {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "the server ended ({status}) before it listened on {listen}:\n{}",
                    server.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the server did not listen on {listen} in 60 s:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Creates tenant `tenant` (with `quota` flags) and returns a new key.
    pub fn tenant(&self, tenant: &str, quota: &[&str]) -> String {
        let mut args = vec!["admin", "tenant", "create", tenant];
        args.extend_from_slice(quota);
        self.ok(&args);
        self.key(tenant)
    }

    /// Sets `tenant`'s secret `name` through the CLI (the value on stdin).
    pub fn set_secret(&self, tenant: &str, name: &str, value: &str) {
        let out = with_stdin(
            self.command(&["admin", "secret", "set", tenant, name]),
            value,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A new API key of `tenant`.
    pub fn key(&self, tenant: &str) -> String {
        self.ok(&["admin", "key", "create", tenant])
            .trim()
            .to_owned()
    }

    /// [`Db::serve`] writing its `info` log to `log`.
    pub fn serve_logged(&self, extra: &[&str], log: Option<&Path>) -> Server {
        let mut args = vec!["serve"];
        for (flag, default) in [
            ("--lease-ms", "1000"),
            ("--tick-ms", "20"),
            ("--listen", "127.0.0.1:0"),
        ] {
            if !extra.contains(&flag) {
                args.extend([flag, default]);
            }
        }
        args.extend_from_slice(extra);
        let mut command = self.command(&args);
        command.stdout(Stdio::null());
        match log {
            Some(log) => {
                command
                    .env("CEREBELUM_LOG", "info")
                    .stderr(std::fs::File::create(log).unwrap());
            }
            None => {
                command.stderr(Stdio::null());
            }
        }
        let child = command.spawn().expect("spawning cerebelum serve");
        Server {
            child,
            log: log.map(Path::to_owned),
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take()
            && let Err(e) = pg_admin(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        {
            eprintln!("dropping the test database {name}: {e}");
        }
    }
}

/// Defines each listed test body as two tests, one on a fresh SQLite file
/// (`sqlite::NAME`) and one on a fresh PostgreSQL database
/// (`postgres::NAME`): the same body, not two copies. A body is a
/// `fn(Db)`, or with `async` first an `async fn(Db)` run on a two-thread
/// tokio runtime.
#[macro_export]
macro_rules! on_both_backends {
    (async $($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::Db::on($crate::Backend::Sqlite)).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::Db::on($crate::Backend::Postgres)).await } )*
        }
    };
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name($crate::Db::on($crate::Backend::Sqlite)) } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name($crate::Db::on($crate::Backend::Postgres)) } )*
        }
    };
}

/// Executions of the database at `url` by status, counted in the database
/// itself (the store's API has no such question).
pub async fn count_by_status(url: &str) -> Vec<(String, i64)> {
    const COUNT: &str = "SELECT status, COUNT(*) FROM executions GROUP BY status ORDER BY status";
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let counts = sqlx::query_as(COUNT).fetch_all(&pool).await.unwrap();
        pool.close().await;
        counts
    } else {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(url.strip_prefix("sqlite://").unwrap_or(url))
            .read_only(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        let counts = sqlx::query_as(COUNT).fetch_all(&pool).await.unwrap();
        pool.close().await;
        counts
    }
}

/// Executions of the database at `url` whose idempotency key starts with
/// `prefix`: (key, status, created_at ms), by key.
pub async fn executions_by_key(url: &str, prefix: &str) -> Vec<(String, String, i64)> {
    const ROWS: &str = "SELECT idempotency_key, status, created_at FROM executions \
                        WHERE idempotency_key LIKE $1 ORDER BY idempotency_key";
    let pattern = format!("{prefix}%");
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let rows = sqlx::query_as(ROWS)
            .bind(pattern)
            .fetch_all(&pool)
            .await
            .unwrap();
        pool.close().await;
        rows
    } else {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(url.strip_prefix("sqlite://").unwrap_or(url))
            .read_only(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        let rows = sqlx::query_as(ROWS)
            .bind(pattern)
            .fetch_all(&pool)
            .await
            .unwrap();
        pool.close().await;
        rows
    }
}

/// A TCP port that was free a moment ago, for a server the test starts
/// on a known port.
///
/// It is taken below the kernel's ephemeral range (32768 and up), in turns
/// from a place that depends on the process: a port the kernel handed out
/// for a bind to port 0 (another test's `--listen 127.0.0.1:0`, a client
/// connection) would be free a moment, then be taken by that other server
/// before ours binds it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const PORTS: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::process::id().wrapping_mul(7919);
    for _ in 0..PORTS {
        let port = FIRST + base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % PORTS;
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    panic!("no free TCP port between {FIRST} and {}", FIRST + PORTS);
}

/// An answer of [`http_request`]: status, head (header names as the
/// server wrote them: lower-case) and body.
pub struct HttpReply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// `line` without its terminal colours (`ESC [ … m`), as `serve` logs
/// them to a file.
pub fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One plain HTTP/1.1 request to the server on 127.0.0.1:`port` (the
/// console, `/metrics`), on a connection of its own.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpReply {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut text = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    // The server's own address, unless the request names another host.
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        text.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    stream.write_all(text.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {head}"));
    HttpReply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// Runs `command` with `input` on its standard input; its output.
pub fn with_stdin(mut command: Command, input: &str) -> Output {
    use std::io::Write as _;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The URL of a server listening on `port`.
pub fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// The `cerebelum` CLI talking to a server as one tenant.
pub struct Remote {
    pub url: String,
    pub key: String,
    /// Flags every command gets (e.g. `--ca-cert FILE`).
    pub flags: Vec<String>,
}

impl Remote {
    pub fn new(port: u16, key: &str) -> Self {
        Self {
            url: url(port),
            key: key.to_owned(),
            flags: Vec::new(),
        }
    }

    /// The CLI on the server at `url` (any scheme), with `flags` on every
    /// command.
    pub fn at(url: &str, key: &str, flags: &[&str]) -> Self {
        Self {
            url: url.to_owned(),
            key: key.to_owned(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
        }
    }

    /// The command, without `--db`: everything goes through the server.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(["--server", &self.url, "--api-key", &self.key])
            .args(&self.flags)
            .args(args)
            .env_remove("CEREBELUM_DATABASE_URL")
            .env("CEREBELUM_LOG", "warn")
            .env("CEREBELUM_CACHE_DIR", cache_dir());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running cerebelum")
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "cerebelum --server {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "cerebelum --server {args:?} should have failed; stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn status(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["status", id, "--json"])).unwrap()
    }

    pub fn journal(&self, id: &str) -> Vec<Value> {
        serde_json::from_str(&self.ok(&["journal", id, "--json"])).unwrap()
    }

    /// Waits until `id` is completed, failed or cancelled; its status.
    pub fn wait_ended(&self, id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status(id);
            if ["completed", "failed", "cancelled"].contains(&status["status"].as_str().unwrap()) {
                return status;
            }
            assert!(Instant::now() < deadline, "{id} did not end: {status}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls `status` until `pred` holds on its text output.
    pub fn wait_text(
        &self,
        args: &[&str],
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.ok(args);
            if pred(&out) {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "timed out; last output of {args:?}:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A `cerebelum serve` process; killed when dropped.
pub struct Server {
    child: Child,
    log: Option<PathBuf>,
}

impl Server {
    /// What the server logged so far, with its exit status if it ended
    /// (for messages of failed tests).
    pub fn log(&mut self) -> String {
        let text = self
            .log
            .as_ref()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .unwrap_or_else(|| "(not logged)".into());
        match self.child.try_wait() {
            Ok(Some(status)) => format!("{text}\n(the server exited: {status})"),
            _ => text,
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} failed");
    }

    /// SIGHUP (the server reloads its TLS files).
    pub fn hangup(&self) {
        self.signal("-HUP");
    }

    /// SIGSTOP: the process freezes (its leases run out) until [`Server::resume`].
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Server::freeze`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// SIGTERM (graceful shutdown); true if the process exited within
    /// `timeout` (it is killed otherwise).
    pub fn terminate(mut self, timeout: Duration) -> bool {
        self.signal("-TERM");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system) the process used so far.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the command name (which may hold spaces): utime and
        // stime are the 12th and 13th, in clock ticks (100 a second here).
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|f| f.parse().unwrap())
            .collect();
        Duration::from_millis((fields[0] + fields[1]) * 10)
    }

    /// The most resident memory the process ever had (VmHWM), bytes.
    pub fn peak_rss(&self) -> u64 {
        self.memory("VmHWM:")
    }

    /// The process's resident memory now (VmRSS), bytes.
    pub fn rss(&self) -> u64 {
        self.memory("VmRSS:")
    }

    /// A memory line of `/proc/PID/status` (`field` with its colon), bytes.
    fn memory(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        kib << 10
    }

    /// Whether the process is still running (it did not crash).
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// A `cerebelum` process a test started itself (e.g. `cerebelum dev`),
/// killed when dropped like one of [`Db::serve_api`].
impl From<Child> for Server {
    fn from(child: Child) -> Self {
        Server { child, log: None }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts that the seqs of execution `id`'s journal are 1..=n: no gap,
/// no duplicate.
pub fn assert_contiguous(id: &str, journal: &[Value]) {
    let seqs: Vec<i64> = journal.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
    assert_eq!(seqs, expected, "{id}: journal seqs are not contiguous");
}

/// Asserts that the journal of a finished execution `id` is consistent:
/// seqs 1..=n, at most one result per call, exactly one per step call
/// (none twice, as after a takeover by another node).
pub fn assert_consistent(id: &str, journal: &[Value]) {
    assert_contiguous(id, journal);
    let mut per_call: std::collections::HashMap<i64, usize> = std::collections::HashMap::new();
    for e in entries(journal, "result") {
        *per_call.entry(e["ref_seq"].as_i64().unwrap()).or_default() += 1;
    }
    for (seq, n) in &per_call {
        assert_eq!(*n, 1, "{id}: the call at seq {seq} has {n} results");
    }
    for call in entries(journal, "call-step") {
        let seq = call["seq"].as_i64().unwrap();
        assert_eq!(
            per_call.get(&seq),
            Some(&1),
            "{id}: step call {seq} has no result"
        );
    }
}

/// Entries of `kind` in a journal.
pub fn entries<'a>(journal: &'a [Value], kind: &str) -> Vec<&'a Value> {
    journal.iter().filter(|e| e["kind"] == kind).collect()
}

/// The seq of the n-th (0-based) workflow call of `kind` to `step`.
pub fn step_call_seq(journal: &[Value], step: &str, n: usize) -> i64 {
    journal
        .iter()
        .filter(|e| e["kind"] == "call-step" && e["payload"]["args"]["step"] == step)
        .nth(n)
        .unwrap_or_else(|| panic!("no call {n} of step {step}"))["seq"]
        .as_i64()
        .unwrap()
}

/// `attempt` entries of the call at `seq`.
pub fn attempts(journal: &[Value], seq: i64) -> usize {
    journal
        .iter()
        .filter(|e| e["kind"] == "attempt" && e["ref_seq"] == seq)
        .count()
}

/// `result` entries of the call at `seq`.
pub fn results(journal: &[Value], seq: i64) -> Vec<&Value> {
    journal
        .iter()
        .filter(|e| e["kind"] == "result" && e["ref_seq"] == seq)
        .collect()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The value after `flag` on a benchmark's command line (lowercased).
pub fn bench_arg(flag: &str) -> Option<String> {
    std::env::args()
        .skip_while(|a| a != flag)
        .nth(1)
        .map(|s| s.to_lowercase())
}

/// The backend a benchmark runs on: `--backend sqlite` (default) or
/// `--backend postgres`.
pub fn bench_backend() -> Backend {
    match bench_arg("--backend").as_deref() {
        None | Some("sqlite") => Backend::Sqlite,
        Some("postgres") => Backend::Postgres,
        Some(other) => panic!("--backend {other}: use sqlite or postgres"),
    }
}

/// A benchmark's tenant `bench` on `db`, with no open-execution or
/// start-rate limit worth the name; its API key.
pub fn bench_tenant(db: &Db) -> String {
    db.tenant(
        "bench",
        &[
            "--max-open-executions",
            "1000000",
            "--max-start-rate",
            "1000000",
        ],
    )
}

/// Starts `n` executions of the testkit's `approval` workflow (uploaded
/// as `kit`; each stays open, waiting) by `clients` gRPC clients at once,
/// on the server at `port`; the starts per second.
pub async fn start_open_executions(port: u16, key: &str, n: usize, clients: usize) -> f64 {
    let t = std::time::Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let key = key.to_owned();
            let mine = n / clients + usize::from(c < n % clients);
            tokio::spawn(async move {
                let mut client = grpc::connect(port, &key).await;
                for _ in 0..mine {
                    client
                        .start_execution(cerebelum::api::pb::StartExecutionRequest {
                            package: "kit".into(),
                            workflow: "approval".into(),
                            input_json: r#"{"key":"go"}"#.into(),
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// The number of cores, for a benchmark's header.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The `p` quantile (0 to 1) of `v`, which it sorts.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}
