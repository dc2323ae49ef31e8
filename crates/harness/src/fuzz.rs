//! The fuzzed front door (issue 19): property-based fuzz targets, each a
//! proptest strategy of hostile inputs and a target that must neither
//! panic nor break its property. `tests/fuzz.rs` runs each for a few
//! seconds in the suite; `cargo bench -p cerebelum-engine --bench fuzz --
//! --seconds 600` runs each for as long as asked and reports inputs tried
//! and failures (the target is 0).
//!
//! - `upload`: arbitrary bytes, bytes after a component header, and
//!   mutated copies of a real component (the testkit), uploaded through
//!   the engine (validation, compilation, the store).
//! - `json`: start inputs — arbitrary text, deep nesting, huge numbers,
//!   valid JSON of every shape — through [`Api::start`]: accepted exactly
//!   when it is JSON within the payload quota, stored as parsed.
//! - `allow_list`: HTTP allow-list entries, and requests checked against
//!   what parsed.
//! - `proto`: every RPC's request message decoded from arbitrary and
//!   mutated bytes; what decodes re-encodes to the same message.
//! - `parsers`: the other text the front door parses (task tokens, server
//!   URLs, durations, statuses).

use cerebelum::api::client::ServerUrl;
use cerebelum::api::service::StartRequest;
use cerebelum::api::{Api, keys, pb};
use cerebelum::clock::SystemClock;
use cerebelum::http::AllowList;
use cerebelum::model::{DEFAULT_QUOTAS, Quotas, TaskToken, TenantRecord};
use cerebelum::store::{self, Synchronous};
use cerebelum::{Engine, EngineConfig};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::Value;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one target did: inputs tried, and each failure (the property's
/// message or the panic's, and the input).
pub struct Report {
    pub name: &'static str,
    pub tried: u64,
    pub failures: Vec<String>,
}

/// How long a target runs: at most `cases` inputs, at most `time`.
#[derive(Clone, Copy)]
pub struct Budget {
    pub cases: u64,
    pub time: Duration,
}

fn shown(value: &impl std::fmt::Debug) -> String {
    let mut text = format!("{value:?}");
    if text.len() > 4000 {
        let mut cut = 4000;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("… (cut)");
    }
    text
}

/// Runs `target` on inputs drawn from `strategy` within `budget`.
pub fn run<S>(
    name: &'static str,
    strategy: S,
    budget: Budget,
    mut target: impl FnMut(S::Value) -> Result<(), String>,
) -> Report
where
    S: Strategy,
    S::Value: Clone + std::fmt::Debug,
{
    let mut runner = TestRunner::new(proptest::test_runner::Config::default());
    let started = Instant::now();
    let mut report = Report {
        name,
        tried: 0,
        failures: Vec::new(),
    };
    while report.tried < budget.cases && started.elapsed() < budget.time {
        let value = match strategy.new_tree(&mut runner) {
            Ok(tree) => tree.current(),
            Err(reason) => panic!("the strategy of {name} gave no input: {reason}"),
        };
        let kept = value.clone();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| target(value)));
        report.tried += 1;
        let failure = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(message)) => message,
            Err(panic) => format!(
                "panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            ),
        };
        report
            .failures
            .push(format!("{failure}\n  input: {}", shown(&kept)));
    }
    report
}

// ------------------------------------------------------------- strategies

/// Bytes: arbitrary, or after a component's header (so parsing goes
/// further), or a real component with a few bytes changed.
pub fn package_bytes(real: Arc<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let header = b"\0asm\x0d\0\x01\0".to_vec();
    let mutations =
        prop::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<u8>()), 1..8);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..4096),
        prop::collection::vec(any::<u8>(), 0..4096).prop_map(move |tail| {
            let mut bytes = header.clone();
            bytes.extend(tail);
            bytes
        }),
        mutations.prop_map(move |changes| {
            let mut bytes = real.as_ref().clone();
            for (at, kind, byte) in changes {
                let i = at
                    .index(bytes.len().max(1))
                    .min(bytes.len().saturating_sub(1));
                match kind {
                    0 => bytes[i] ^= byte | 1,
                    1 => bytes.insert(i, byte),
                    2 if bytes.len() > 1 => {
                        bytes.remove(i);
                    }
                    _ => bytes[i] = byte,
                }
            }
            bytes
        }),
    ]
}

/// JSON values of every shape, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::hash_map(any::<String>(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Start inputs: arbitrary text, nesting up to 100,000 deep, numbers of
/// up to 5,000 digits or huge exponents, and valid JSON.
pub fn json_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        (1usize..100_000, prop::bool::ANY).prop_map(|(depth, closed)| {
            let mut text = "[".repeat(depth);
            if closed {
                text.push_str(&"]".repeat(depth));
            }
            text
        }),
        (1usize..5_000, "[-+eE.0-9]{0,8}")
            .prop_map(|(digits, tail)| { format!("{{\"n\": 9{}{tail}}}", "9".repeat(digits)) }),
        "-?[0-9]{1,3}[eE][+-]?[0-9]{1,8}",
        json_value().prop_map(|v| v.to_string()),
    ]
}

/// Allow-list entries: host-like text and arbitrary text.
pub fn allow_entries() -> impl Strategy<Value = (Vec<String>, String, u16, String)> {
    let entry = prop_oneof![
        "(https?://)?(\\*\\.)?[a-z0-9.-]{0,24}(:[0-9]{0,6})?(/[a-z*]{0,8})?",
        "[A-Z]{0,6} [a-z.*]{0,20}",
        any::<String>(),
    ];
    (
        prop::collection::vec(entry, 0..6),
        "[a-zA-Z0-9.-]{0,30}",
        any::<u16>(),
        "/[a-z/]{0,12}",
    )
}

// ---------------------------------------------------------------- targets

/// An engine on a fresh SQLite file (its own compiled-component cache, so
/// mutants never reach the shared one), its API and a tenant with room.
pub struct Front {
    pub runtime: tokio::runtime::Runtime,
    pub api: Api,
    pub tenant: TenantRecord,
    _dir: tempfile::TempDir,
}

impl Front {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (api, tenant) = runtime.block_on(async {
            let url = dir.path().join("fuzz.db");
            let store = store::open(url.to_str().unwrap(), Synchronous::Normal)
                .await
                .unwrap();
            let mut config = EngineConfig::new(dir.path().join("cache"));
            config.quotas = Quotas {
                max_open_executions: Some(i64::MAX),
                ..DEFAULT_QUOTAS
            };
            let engine = Engine::new(store.clone(), config, Arc::new(SystemClock)).unwrap();
            let tenant = store
                .catalog()
                .create_tenant("fuzz", &Quotas::default(), &[], 0)
                .await
                .unwrap();
            let api = Api::new(engine);
            let kit = std::fs::read(super::guest("testkit")).unwrap();
            api.upload(&tenant, "kit", kit).await.unwrap();
            (api, tenant)
        });
        Self {
            runtime,
            api,
            tenant,
            _dir: dir,
        }
    }

    /// Uploads `bytes`: accepted or refused with a message, and a real
    /// component is still accepted afterwards (nothing was left broken).
    pub fn upload(&self, bytes: Vec<u8>) -> Result<(), String> {
        self.runtime.block_on(async {
            match self.api.upload(&self.tenant, "fuzzed", bytes).await {
                Ok(package) if package.info.workflows.is_empty() => {
                    Err("a package without workflows was accepted".into())
                }
                Ok(_) => Ok(()),
                Err(e) if e.to_string().trim().is_empty() => {
                    Err("refused without a message".into())
                }
                Err(_) => Ok(()),
            }
        })
    }

    /// Starts `kit`'s `noop3` with `input`: accepted exactly when it is
    /// JSON (or empty) within the payload quota, and stored as parsed.
    pub fn start(&self, input: String) -> Result<(), String> {
        let quota = DEFAULT_QUOTAS.max_payload_bytes.unwrap_or(i64::MAX) as usize;
        let expected = if input.trim().is_empty() {
            Some(serde_json::json!({}))
        } else if input.len() > quota {
            None
        } else {
            serde_json::from_str::<Value>(&input).ok()
        };
        let request = StartRequest {
            package: "kit".into(),
            workflow: "noop3".into(),
            input: input.clone(),
            ..StartRequest::default()
        };
        let started = self.runtime.block_on(self.api.start(&self.tenant, request));
        match (started, expected) {
            (Ok((record, _)), Some(value)) if record.input == value => Ok(()),
            (Ok((record, _)), Some(_)) => Err(format!("stored as {}", record.input)),
            (Ok(_), None) => Err("accepted input that is not JSON within the quota".into()),
            (Err(e), Some(_)) => Err(format!("refused valid JSON: {e}")),
            (Err(e), None) if e.to_string().contains("JSON") || input.len() > quota => Ok(()),
            (Err(e), None) => Err(format!("refused with an unclear message: {e}")),
        }
    }
}

impl Default for Front {
    fn default() -> Self {
        Self::new()
    }
}

/// Parses an allow-list and checks a request against it.
pub fn allow_list(
    (entries, host, port, path): (Vec<String>, String, u16, String),
) -> Result<(), String> {
    match AllowList::parse(&entries) {
        Ok(list) => {
            for method in ["GET", "POST", "get", ""] {
                list.allows(method, &host, port, &path);
            }
            if entries.is_empty() && list.allows("GET", &host, port, &path) {
                return Err("an empty allow-list allowed a request".into());
            }
            Ok(())
        }
        Err(e) if e.to_string().trim().is_empty() => Err("refused without a message".into()),
        Err(_) => Ok(()),
    }
}

/// Decodes `bytes` as every request message; what decodes must re-encode
/// and decode to the same message.
pub fn proto(bytes: Vec<u8>) -> Result<(), String> {
    use prost::Message;
    fn each<M: Message + Default + PartialEq>(name: &str, bytes: &[u8]) -> Result<(), String> {
        if let Ok(message) = M::decode(bytes) {
            let again = M::decode(message.encode_to_vec().as_slice())
                .map_err(|e| format!("{name} does not decode what it encoded: {e}"))?;
            if again != message {
                return Err(format!("{name} changed in a round trip"));
            }
        }
        Ok(())
    }
    macro_rules! all {
        ($($t:ident),* $(,)?) => {{ $( each::<pb::$t>(stringify!($t), &bytes)?; )* }};
    }
    all!(
        UploadPackageRequest,
        ListPackagesRequest,
        DescribePackageRequest,
        StartExecutionRequest,
        GetExecutionRequest,
        ListExecutionsRequest,
        WatchExecutionRequest,
        ApproveRequest,
        RejectRequest,
        SignalRequest,
        CancelRequest,
        PauseRequest,
        ResumeRequest,
        RetryRequest,
        GetJournalRequest,
        RegisterWorkerRequest,
        PollTaskRequest,
        HeartbeatRequest,
        CompleteTaskRequest,
        ReleaseTaskRequest,
        UnregisterWorkerRequest,
        ListWorkersRequest,
        CreateTenantRequest,
        UpdateTenantRequest,
        ListTenantsRequest,
        CreateKeyRequest,
        ListKeysRequest,
        RevokeKeyRequest,
        SetSecretRequest,
        ListSecretsRequest,
        DeleteSecretRequest,
        ListAuditRequest,
        CreateScheduleRequest,
        ListSchedulesRequest,
        PauseScheduleRequest,
        DeleteScheduleRequest,
        TriggerScheduleRequest,
        CreateTriggerRequest,
        ListTriggersRequest,
        DeleteTriggerRequest,
    );
    Ok(())
}

/// Bytes for [`proto`]: arbitrary, or a valid request with bytes changed.
pub fn proto_bytes() -> impl Strategy<Value = Vec<u8>> {
    use prost::Message;
    let valid = pb::StartExecutionRequest {
        package: "kit".into(),
        workflow: "noop3".into(),
        input_json: r#"{"name":"web-1"}"#.into(),
        idempotency_key: Some("k".into()),
        ..Default::default()
    }
    .encode_to_vec();
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6).prop_map(
            move |changes| {
                let mut bytes = valid.clone();
                for (at, byte) in changes {
                    let i = at.index(bytes.len());
                    bytes[i] = byte;
                }
                bytes
            }
        ),
    ]
}

/// The front door's other parsers: none panics; what parses is shown back
/// the same way.
pub fn parsers(text: String) -> Result<(), String> {
    if let Ok(token) = text.parse::<TaskToken>()
        && token.to_string().parse::<TaskToken>().ok().as_ref() != Some(&token)
    {
        return Err(format!("task token {token} does not parse back"));
    }
    let _ = ServerUrl::parse(&text);
    if let Ok(ms) = keys::parse_duration(&text)
        && ms <= 0
    {
        return Err(format!("duration {ms} ms"));
    }
    let _ = Api::parse_status(&text);
    let _ = keys::id_of(&text);
    let _ = cerebelum::api::auth::bearer(&text);
    Ok(())
}

/// Text for [`parsers`]: token-, URL- and duration-like, and arbitrary.
pub fn parser_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "ex_[0-9a-f]{0,26}/[0-9]{0,3}/[0-9]{0,3}/[a-z_0-9]{0,10}",
        "(https?|grpc)://[a-z0-9.:\\[\\]]{0,30}(/[a-z]{0,5})?",
        "[0-9]{0,20}[smhdw ]{0,2}",
        "(?i)bearer[ \t]{0,3}[a-z0-9_]{0,20}",
    ]
}
