//! Prometheus metrics of a node, served by `cerebelum serve` at
//! `GET /metrics` (text format, on the gRPC API's port).
//!
//! One registry per process ([`metrics`]): engines in one process (tests,
//! benchmarks) add to the same counters. Labels are bounded: tenant,
//! package name and status, never an execution id.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::LazyLock;

/// Which tenant's package a count is about.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PackageLabels {
    pub tenant: String,
    pub package: String,
}

/// An ended execution.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FinishedLabels {
    pub tenant: String,
    pub package: String,
    /// `completed`, `failed` or `cancelled`.
    pub status: String,
}

/// A limit of the sandbox that stopped an invocation.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub tenant: String,
    /// `memory`, `node_memory`, `deadline`, `output` or `fuel`.
    pub kind: &'static str,
}

/// What an invocation ran.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InvocationLabels {
    /// `workflow` or `step`.
    pub kind: &'static str,
}

/// How a step call ended (after its retries).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub tenant: String,
    pub package: String,
    /// `completed` or `failed`.
    pub outcome: &'static str,
}

/// How an HTTP request of a step ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub tenant: String,
    /// `2xx`…`5xx` for a response; else the error: `denied` (not on the
    /// allow-list), `timeout`, `connection-refused`, `request-too-large`,
    /// `response-too-large`, `invalid-url` or `error`.
    pub outcome: String,
}

/// Open executions of a tenant in one status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpenLabels {
    pub tenant: String,
    /// `pending`, `running` or `waiting` (hibernated or waiting in process).
    pub status: String,
}

/// A worker queue of a tenant.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub tenant: String,
    pub queue: String,
}

/// The node's metrics.
pub struct Metrics {
    registry: Registry,
    pub executions_started: Family<PackageLabels, Counter>,
    pub executions_finished: Family<FinishedLabels, Counter>,
    pub step_attempts: Family<PackageLabels, Counter>,
    pub journal_commit_seconds: Histogram,
    pub journal_commit_batch: Histogram,
    pub live_instances: Gauge,
    pub invocation_seconds: Family<InvocationLabels, Histogram, fn() -> Histogram>,
    pub limit_breaches: Family<LimitLabels, Counter>,
    pub steps_finished: Family<StepLabels, Counter>,
    pub http_requests: Family<HttpLabels, Counter>,
    pub hibernations: Counter,
    pub claims: Counter,
    pub feed_reads: Counter,
    pub lease_takeovers: Counter,
    pub auth_failures: Counter,
    pub timer_lateness_seconds: Histogram,
    /// Read from the database at each scrape (all nodes' executions).
    pub executions_open: Family<OpenLabels, Gauge>,
    pub tasks_queued: Family<QueueLabels, Gauge>,
    pub workers: Family<QueueLabels, Gauge>,
}

/// Counts read from the database at each scrape of `/metrics` (the store reads them).
#[derive(Debug, Default)]
pub struct Gauges {
    /// (tenant, status, executions) for pending, running and waiting.
    pub open: Vec<(String, String, i64)>,
    /// (tenant, queue, tasks) waiting for a worker.
    pub queued: Vec<(String, String, i64)>,
    /// (tenant, queue, workers) seen polling in the last minute.
    pub workers: Vec<(String, String, i64)>,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("cerebelum");
        let executions_started = Family::<PackageLabels, Counter>::default();
        registry.register(
            "executions_started",
            "Executions started",
            executions_started.clone(),
        );
        let executions_finished = Family::<FinishedLabels, Counter>::default();
        registry.register(
            "executions_finished",
            "Executions ended, by status (completed, failed, cancelled)",
            executions_finished.clone(),
        );
        let step_attempts = Family::<PackageLabels, Counter>::default();
        registry.register(
            "step_attempts",
            "Attempts of steps (and checks of engine-driven polls) started",
            step_attempts.clone(),
        );
        // 50 µs to ~3.3 s.
        let journal_commit_seconds = Histogram::new(exponential_buckets(50e-6, 2.0, 17));
        registry.register(
            "journal_commit_seconds",
            "Time of one group commit of journal entries (one durable transaction)",
            journal_commit_seconds.clone(),
        );
        let journal_commit_batch = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        registry.register(
            "journal_commit_batch",
            "Operations (executions' appends and creations) per group commit",
            journal_commit_batch.clone(),
        );
        let live_instances = Gauge::default();
        registry.register(
            "live_instances",
            "WebAssembly instances alive on this node (running or waiting in process)",
            live_instances.clone(),
        );
        // 100 µs to ~52 s.
        let invocation_seconds =
            Family::<InvocationLabels, Histogram, fn() -> Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(100e-6, 2.0, 20))
            });
        registry.register(
            "invocation_seconds",
            "Time of one invocation (instance, call, drop) of a workflow or of a step \
             attempt, until it returned or hibernated",
            invocation_seconds.clone(),
        );
        let limit_breaches = Family::<LimitLabels, Counter>::default();
        registry.register(
            "limit_breaches",
            "Invocations stopped by a limit of the sandbox, by tenant and limit",
            limit_breaches.clone(),
        );
        let steps_finished = Family::<StepLabels, Counter>::default();
        registry.register(
            "steps_finished",
            "Step calls ended, after their retries: completed or failed",
            steps_finished.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests of steps (not replayed ones), by status class or error",
            http_requests.clone(),
        );
        let hibernations = Counter::default();
        registry.register(
            "hibernations",
            "Executions hibernated at a long wait (instance dropped, journal kept)",
            hibernations.clone(),
        );
        let claims = Counter::default();
        registry.register(
            "claims",
            "Due executions this node claimed (new, woken, retried or taken over)",
            claims.clone(),
        );
        let feed_reads = Counter::default();
        registry.register(
            "feed_reads",
            "Reads of the store by watch feeds (a record, and new entries if followed)",
            feed_reads.clone(),
        );
        let lease_takeovers = Counter::default();
        registry.register(
            "lease_takeovers",
            "Running executions this node took over after their owner's lease expired",
            lease_takeovers.clone(),
        );
        let auth_failures = Counter::default();
        registry.register(
            "auth_failures",
            "Requests refused for a missing, malformed, unknown, revoked or throttled API key \
             (gRPC and the console's sign-in)",
            auth_failures.clone(),
        );
        // 1 ms to ~65 s.
        let timer_lateness_seconds = Histogram::new(exponential_buckets(1e-3, 2.0, 17));
        registry.register(
            "timer_lateness_seconds",
            "How long after its due time a hibernated execution was claimed",
            timer_lateness_seconds.clone(),
        );
        let executions_open = Family::<OpenLabels, Gauge>::default();
        registry.register(
            "executions_open",
            "Open executions in the database by tenant and status (read at each scrape)",
            executions_open.clone(),
        );
        let tasks_queued = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "tasks_queued",
            "Step attempts waiting for an external worker, by tenant and worker queue \
             (read at each scrape)",
            tasks_queued.clone(),
        );
        let workers = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "workers",
            "External workers seen polling in the last minute, by tenant and worker queue; 0 \
             for a queue with waiting tasks and no worker (read at each scrape)",
            workers.clone(),
        );
        Self {
            registry,
            steps_finished,
            http_requests,
            hibernations,
            claims,
            feed_reads,
            lease_takeovers,
            auth_failures,
            timer_lateness_seconds,
            executions_open,
            tasks_queued,
            workers,
            executions_started,
            executions_finished,
            step_attempts,
            journal_commit_seconds,
            journal_commit_batch,
            live_instances,
            invocation_seconds,
            limit_breaches,
        }
    }

    /// Everything, in the Prometheus (OpenMetrics) text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(error = %e, "encoding the metrics");
        }
        text
    }

    /// Everything, with the database's gauges as just read (or the error
    /// reading them).
    pub fn scrape<E: std::fmt::Display>(&self, gauges: Result<Gauges, E>) -> String {
        match gauges {
            Ok(gauges) => {
                self.executions_open.clear();
                for (tenant, status, n) in gauges.open {
                    self.executions_open
                        .get_or_create(&OpenLabels { tenant, status })
                        .set(n);
                }
                self.tasks_queued.clear();
                self.workers.clear();
                for (tenant, queue, n) in gauges.workers {
                    self.workers
                        .get_or_create(&QueueLabels { tenant, queue })
                        .set(n);
                }
                for (tenant, queue, n) in gauges.queued {
                    let labels = QueueLabels { tenant, queue };
                    // A queue with waiting tasks and no worker: 0 workers.
                    drop(self.workers.get_or_create(&labels));
                    self.tasks_queued.get_or_create(&labels).set(n);
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the database's gauges for /metrics"),
        }
        self.encode()
    }

    /// A claim of an execution: counted, whether it took the execution
    /// over from a node whose lease ran out, and how late its timer was.
    pub fn claimed(&self, taken_over: bool, late_ms: Option<i64>) {
        self.claims.inc();
        if taken_over {
            self.lease_takeovers.inc();
        }
        if let Some(late) = late_ms {
            self.timer_lateness_seconds
                .observe(late.max(0) as f64 / 1000.0);
        }
    }

    /// A step call ended after its retries.
    pub fn step_finished(&self, tenant: &str, package: &str, ok: bool) {
        self.steps_finished
            .get_or_create(&StepLabels {
                tenant: tenant.to_owned(),
                package: package.to_owned(),
                outcome: if ok { "completed" } else { "failed" },
            })
            .inc();
    }

    /// An HTTP request of a step got `answer`.
    pub fn http_request(&self, tenant: &str, answer: &crate::journal::HttpAnswer) {
        let outcome = match answer {
            crate::journal::HttpAnswer::Response { status, .. } => {
                format!("{}xx", (status / 100).clamp(1, 5))
            }
            crate::journal::HttpAnswer::Error { error, .. } => match error.as_str() {
                "denied" | "timeout" | "connection-refused" | "request-too-large"
                | "response-too-large" | "invalid-url" => error.clone(),
                _ => "error".to_owned(),
            },
        };
        self.http_requests
            .get_or_create(&HttpLabels {
                tenant: tenant.to_owned(),
                outcome,
            })
            .inc();
    }

    pub fn package(tenant: &str, package: &str) -> PackageLabels {
        PackageLabels {
            tenant: tenant.to_owned(),
            package: package.to_owned(),
        }
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// Observes the time from its making to its drop into a histogram.
pub struct Timer {
    histogram: Histogram,
    began: std::time::Instant,
}

impl Timer {
    pub fn start(histogram: Histogram) -> Self {
        Self {
            histogram,
            began: std::time::Instant::now(),
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.histogram.observe(self.began.elapsed().as_secs_f64());
    }
}

/// Counts a live instance while it exists.
pub struct LiveInstance(());

impl LiveInstance {
    #[allow(
        clippy::new_without_default,
        reason = "counting an instance is an action, not a default value"
    )]
    pub fn new() -> Self {
        metrics().live_instances.inc();
        Self(())
    }
}

impl Drop for LiveInstance {
    fn drop(&mut self) {
        metrics().live_instances.dec();
    }
}
