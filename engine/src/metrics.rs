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
        Self {
            registry,
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
pub(crate) struct Timer {
    histogram: Histogram,
    began: std::time::Instant,
}

impl Timer {
    pub(crate) fn start(histogram: Histogram) -> Self {
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
pub(crate) struct LiveInstance(());

impl LiveInstance {
    pub(crate) fn new() -> Self {
        metrics().live_instances.inc();
        Self(())
    }
}

impl Drop for LiveInstance {
    fn drop(&mut self) {
        metrics().live_instances.dec();
    }
}
