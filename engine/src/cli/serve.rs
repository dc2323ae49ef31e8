//! The commands that run an engine node in this process: `run` (one
//! execution, to its end), `serve` (the scheduler, the schedules and the
//! gRPC API until a signal) and `dev` (`serve` on loopback for one
//! developer: a key made for them, the console without sign-in).

use super::connect::local;
use super::flags::{EngineArgs, QuotaArgs, engine, range};
use super::packages::upload_file;
use super::{Cli, print_outcome, watch};
use anyhow::{Context, Result, bail};
use cerebelum::api::Api;
use cerebelum::api::service::StartRequest;
use cerebelum::api::tls::{ServerTls, TlsFiles};
use cerebelum::model::Quotas;
use cerebelum::server::{self, ServerSettings};
use cerebelum::store;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub(crate) struct RunArgs {
    /// The package (.wasm component).
    package: PathBuf,
    /// The workflow to run.
    workflow: String,
    /// The workflow's input, JSON (`@FILE`: read from FILE).
    #[arg(long, default_value = "{}", value_parser = super::flags::json_text)]
    input: String,
    /// Package name (default: the file name without .wasm).
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Address of the gRPC API; port 0 picks a free port (the address
    /// is printed).
    #[arg(long, env = "CEREBELUM_LISTEN", default_value = "127.0.0.1:7433")]
    listen: String,
    /// Largest gRPC message, MiB (an upload is one message; keep it
    /// above every tenant's package quota).
    #[arg(long, default_value_t = 256, value_parser = range(1, 4095))]
    max_message_mb: u64,
    /// Watch streams open at once on this server, all tenants together.
    #[arg(long, default_value_t = 10_000, value_parser = range(1, 10_000_000))]
    node_max_streams: u64,
    /// Failed authentications (wrong, revoked or missing keys) one peer
    /// address may make per minute before its requests are refused
    /// without a look at the key, until its minute is over; 0: no limit.
    /// Behind a reverse proxy every client has the proxy's address: raise
    /// it or turn it off there.
    #[arg(long, default_value_t = 20, value_parser = range(0, 1_000_000))]
    max_auth_failures: u64,
    /// Serve over TLS with this certificate chain (PEM, the server's
    /// certificate first); needs --tls-key. gRPC, the console and
    /// /metrics are all behind it. The files are read again on SIGHUP and
    /// when they change: new connections get the new certificate, open
    /// streams stay.
    #[arg(
        long,
        env = "CEREBELUM_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(
        long,
        env = "CEREBELUM_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Also require every client to present a certificate signed by this
    /// CA (PEM; mutual TLS), besides its API key.
    #[arg(
        long,
        env = "CEREBELUM_TLS_CLIENT_CA",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_client_ca: Option<PathBuf>,
    /// Listen without TLS on an address other than loopback (refused
    /// otherwise: API keys and payloads would cross the network in clear).
    /// For a TLS-terminating proxy on the same host or a network you trust.
    #[arg(long, conflicts_with = "tls_cert")]
    insecure_plaintext: bool,
    #[command(flatten)]
    quotas: QuotaArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

pub(crate) async fn run(cli: &Cli, args: &RunArgs) -> Result<ExitCode> {
    if cli.server.is_some() {
        anyhow::bail!(
            "`run` drives the execution in this process on the local database; with a server \
             use `cerebelum start FILE WORKFLOW` and `cerebelum watch ID`"
        );
    }
    let engine = engine(cli, &args.engine, Quotas::default(), false).await?;
    let ops = local(Api::new(engine.clone())).await?;
    if let Ok(bytes) = std::fs::read(&args.package)
        && engine.needs_compiling(&bytes)
    {
        // Cranelift takes 10-40 s on a Python package: say why it is quiet.
        eprintln!(
            "compiling {} (first run only; it is cached)…",
            args.package.display()
        );
    }
    let record = upload_file(&ops, &args.package, args.name.clone()).await?;
    for (step, queue) in record.info.placed() {
        eprintln!(
            "warning: step '{step}' runs on worker queue '{queue}', which `run` does not serve: \
             a call of it fails (run the package on `cerebelum serve` with a worker)"
        );
    }
    let (execution, _) = ops
        .start(StartRequest {
            package: record.name.clone(),
            version: Some(record.version),
            workflow: args.workflow.clone(),
            input: args.input.clone(),
            idempotency_key: None,
            worker_queue: None,
        })
        .await?;
    eprintln!(
        "execution {} of {} v{} ({} in {})",
        execution.id, record.name, record.version, args.workflow, cli.db
    );
    let id = execution.id.clone();
    let watcher = async {
        if let Err(e) = watch::follow(&ops, &id, Duration::ZERO).await {
            eprintln!("warning: cannot show the progress: {e:#}");
        }
    };
    let (done, ()) = tokio::join!(engine.run_until_done(&execution.id), watcher);
    Ok(print_outcome(&done?))
}

/// The server's TLS, or why it may listen without.
fn tls(args: &ServeArgs, addr: std::net::SocketAddr) -> Result<Option<Arc<ServerTls>>> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let files = TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.tls_client_ca.clone(),
        };
        return Ok(Some(ServerTls::new(files)?));
    }
    if !addr.ip().is_loopback() && !args.insecure_plaintext {
        bail!(
            "refusing to listen on {addr} without TLS: API keys, secrets' names and payloads \
             would cross the network in clear. Give --tls-cert FILE --tls-key FILE (PEM), or \
             listen on 127.0.0.1 behind a TLS-terminating proxy, or pass --insecure-plaintext \
             if this network is trusted"
        );
    }
    Ok(None)
}

#[derive(Args)]
pub(crate) struct DevArgs {
    /// A package to serve as you edit it: a Python file or a Rust crate
    /// directory (built as `cerebelum build` does) or a .wasm component,
    /// uploaded at start and again, as a new version, whenever it changes
    /// (running executions keep the version they started on).
    source: Option<PathBuf>,
    /// The Python that builds a Python file (default: ./.venv/bin/python
    /// if it exists, else python3).
    #[arg(long, env = "CEREBELUM_PYTHON")]
    python: Option<PathBuf>,
    #[command(flatten)]
    serve: ServeArgs,
}

/// What `cerebelum dev SOURCE` keeps uploaded.
struct DevSource {
    source: PathBuf,
    python: Option<PathBuf>,
}

impl DevSource {
    /// The package's name: the file or directory name without extension.
    fn name(&self) -> String {
        self.source
            .file_stem()
            .map(|s| s.to_string_lossy().replace('_', "-"))
            .unwrap_or_else(|| "dev".into())
    }

    /// The newest modification time of the source (a crate: of its files
    /// outside `target/`).
    fn changed_at(&self) -> Option<std::time::SystemTime> {
        fn newest(path: &std::path::Path) -> Option<std::time::SystemTime> {
            let meta = std::fs::metadata(path).ok()?;
            if !meta.is_dir() {
                return meta.modified().ok();
            }
            std::fs::read_dir(path)
                .ok()?
                .flatten()
                .filter(|e| {
                    e.file_name() != "target" && !e.file_name().to_string_lossy().starts_with('.')
                })
                .filter_map(|e| newest(&e.path()))
                .max()
        }
        newest(&self.source)
    }

    /// Builds (unless it is a .wasm) and uploads the source; says what
    /// it did, or what went wrong, and goes on either way.
    async fn upload(&self, api: &Api) {
        let wasm = if self.source.extension().is_some_and(|e| e == "wasm") {
            self.source.clone()
        } else {
            let out = std::env::temp_dir().join(format!(
                "cerebelum-dev-{}-{}.wasm",
                std::process::id(),
                self.name()
            ));
            let (source, python, target) = (self.source.clone(), self.python.clone(), out.clone());
            let built = tokio::task::spawn_blocking(move || {
                super::build::build(&source, Some(&target), python.as_deref())
            })
            .await;
            match built {
                Ok(Ok(code)) if code == ExitCode::SUCCESS => out,
                Ok(Ok(_)) => {
                    eprintln!(
                        "dev: {} did not build; fix it and save again",
                        self.source.display()
                    );
                    return;
                }
                Ok(Err(e)) => {
                    eprintln!("dev: {e:#}");
                    return;
                }
                Err(e) => {
                    eprintln!("dev: the build stopped: {e}");
                    return;
                }
            }
        };
        let ops = match local(api.clone()).await {
            Ok(ops) => ops,
            Err(e) => return eprintln!("dev: {e:#}"),
        };
        let uploaded = upload_file(&ops, &wasm, Some(self.name())).await;
        if wasm != self.source {
            let _ = std::fs::remove_file(&wasm);
        }
        match uploaded {
            Ok(p) => eprintln!(
                "dev: uploaded {} v{} (workflows: {})",
                p.name,
                p.version,
                p.info
                    .workflows
                    .iter()
                    .map(|w| w.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Err(e) => eprintln!("dev: {e:#}"),
        }
    }

    /// Uploads the source now and whenever it changes, until `stopped`.
    async fn keep_uploaded(self, api: Api, mut stopped: tokio::sync::watch::Receiver<bool>) {
        let mut seen = None;
        loop {
            let now = self.changed_at();
            if now.is_some() && now != seen {
                seen = now;
                self.upload(&api).await;
            }
            tokio::select! {
                _ = stopped.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}

/// `cerebelum dev`: `serve` on loopback, with a new API key of tenant
/// `default` printed as a ready `export` line and the console signing
/// visitors from loopback in with it.
pub(crate) async fn dev(cli: &Cli, dev: &DevArgs) -> Result<ExitCode> {
    let args = &dev.serve;
    if let Some(source) = &dev.source
        && !source.exists()
    {
        bail!("{}: no such file or directory", source.display());
    }
    let loopback = args
        .listen
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback());
    if !loopback || args.tls_cert.is_some() || args.insecure_plaintext {
        bail!(
            "`cerebelum dev` listens on loopback only (127.0.0.1 or [::1], without TLS): its \
             console needs no key there. Listen on {} with `cerebelum serve` instead (keys, TLS)",
            args.listen
        );
    }
    let source = dev.source.clone().map(|source| DevSource {
        source,
        python: dev.python.clone(),
    });
    serve_with(cli, args, Some(source)).await
}

pub(crate) async fn serve(cli: &Cli, args: &ServeArgs) -> Result<ExitCode> {
    serve_with(cli, args, None).await
}

/// `serve`, or with `dev` `dev`'s (see [`dev`]), with what it keeps
/// uploaded.
async fn serve_with(
    cli: &Cli,
    args: &ServeArgs,
    dev: Option<Option<DevSource>>,
) -> Result<ExitCode> {
    let listen = &args.listen;
    let addr: Option<std::net::SocketAddr> = listen.parse().ok();
    // Check the TLS files (and the plaintext rule) before opening anything.
    let early_tls = match addr {
        Some(addr) => Some(tls(args, addr)?),
        None => None,
    };
    let engine = engine(cli, &args.engine, args.quotas.quotas(), true).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("cannot listen on {listen}; pass another address with --listen")
        })?;
    let addr = listener.local_addr()?;
    let tls = match early_tls {
        Some(tls) => tls,
        None => tls(args, addr)?,
    };
    let (grpc_scheme, http_scheme) = match &tls {
        Some(_) => ("https", "https"),
        None => ("grpc", "http"),
    };
    eprintln!(
        "cerebelum serving {} on {grpc_scheme}://{addr}{}; Ctrl-C to stop\n  console: {http_scheme}://{addr}/\n  metrics (Prometheus): {http_scheme}://{addr}/metrics",
        store::redacted(&cli.db),
        match &tls {
            Some(tls) if tls.verifies_clients() => " (TLS, client certificates required)",
            Some(_) => " (TLS)",
            None => "",
        }
    );
    let api = Api::new(engine.clone());
    let (dev_key, dev_source) = match dev {
        Some(source) => {
            let key = cerebelum::api::keys::create(
                api.store(),
                cerebelum::model::DEFAULT_TENANT,
                api.now_ms(),
                None,
            )
            .await
            .context("making the dev server's API key")?;
            (Some(key.secret), source)
        }
        None => (None, None),
    };
    if let Some(key) = &dev_key {
        eprintln!(
            "  the console signs you in as tenant 'default' (from this machine only)\n  for the \
             CLI and the SDKs, in another shell:\n"
        );
        // The one line a developer copies: on stdout, alone.
        out!("export CEREBELUM_SERVER=http://{addr} CEREBELUM_API_KEY={key}");
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let limits = ServerSettings {
        max_message_bytes: (args.max_message_mb << 20) as usize,
        max_streams: args.node_max_streams as usize,
        max_auth_failures: args.max_auth_failures as u32,
        dev_key,
    };
    // Schedules fire on every node (each due time starts one execution,
    // whichever node fires it).
    let schedules = cerebelum::api::schedules::run(api.clone(), until_stopped(stopped.clone()));
    // So are upgrades asked while their execution ran, when it hibernates.
    let upgrades = cerebelum::api::upgrades::run(api.clone(), until_stopped(stopped.clone()));
    let (dev_api, dev_stopped) = (api.clone(), stopped.clone());
    let uploads = async move {
        if let Some(source) = dev_source {
            source.keep_uploaded(dev_api, dev_stopped).await;
        }
    };
    let grpc = server::serve(
        api.clone(),
        listener,
        tls,
        limits,
        until_stopped(stopped.clone()),
    );
    let scheduler = engine.serve(until_stopped(stopped));
    let signal = async {
        shutdown_signal().await;
        let _ = stop.send(true);
    };
    let (grpc, scheduler, (), (), (), ()) =
        tokio::join!(grpc, scheduler, schedules, upgrades, signal, uploads);
    grpc?;
    scheduler?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
