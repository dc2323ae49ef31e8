//! `cerebelum`: the engine's command line. Commands work on the database
//! named by `--db` (an embedded SQLite file, default `./cerebelum.db`, or a
//! PostgreSQL URL shared by several nodes) as tenant `default`, or, with
//! `--server URL --api-key KEY`, on a remote `cerebelum serve` as the key's
//! tenant. The commands live in `cli/`, one module per group.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::from_command_line();
    // One worker thread more than cores: guest code runs on at most one
    // per core (see `runtime::CpuSlots`), so the engine's own work (the
    // API, commits, timers) always finds a thread, even while every core
    // runs a guest that spins; the kernel shares the cores between them.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores + 1)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The OTLP exporter's channel lives on the runtime.
    let spans = {
        let _in_runtime = runtime.enter();
        match init_logging(&cli) {
            Ok(spans) => spans,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    };
    let code = match runtime.block_on(cli::dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    if let Some(provider) = spans
        && let Err(e) = provider.shutdown()
    {
        eprintln!("warning: not every span reached the OTLP collector: {e}");
    }
    code
}

/// Logs to stderr as `--log` and `--log-format` say; with
/// `--otlp-endpoint`, spans at `info` and above also go to that collector
/// (the provider returned must be shut down to send the last ones).
fn init_logging(
    cli: &cli::Cli,
) -> Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>, String> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|e| {
        eprintln!(
            "warning: --log {:?} is not a log filter ({e}); logging warnings only (try `info` \
             or `cerebelum=debug`)",
            cli.log
        );
        tracing_subscriber::EnvFilter::new("warn")
    });
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match cli.log_format {
        cli::LogFormat::Text => logs.with_filter(filter).boxed(),
        cli::LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_filter(filter)
            .boxed(),
    };
    let Some(endpoint) = &cli.otlp_endpoint else {
        tracing_subscriber::registry().with(logs).init();
        return Ok(None);
    };
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("--otlp-endpoint {endpoint:?}: {e}"))?;
    let batches = opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            opentelemetry_sdk::trace::BatchConfigBuilder::default()
                .with_scheduled_delay(std::time::Duration::from_secs(1))
                .build(),
        )
        .build();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_span_processor(batches)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("cerebelum")
                .build(),
        )
        .build();
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("cerebelum"))
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    tracing_subscriber::registry().with(logs).with(spans).init();
    Ok(Some(provider))
}
