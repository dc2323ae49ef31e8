//! What user code reports about itself: `set-state` (the state `status`
//! and the console show), `report-progress` and `log`. Answered at once.

use super::WasmResult;
use crate::executor::guest::GuestData;
use crate::executor::parse_payload;
use crate::journal::{Log, LogLine, Progress, ReportProgress, SetState, StateArgs};
use crate::runtime::bindings::cerebelum::workflow::types as t;
use serde_json::Value;

pub async fn set_state(data: &mut GuestData, state: String) -> WasmResult<Result<(), t::Error>> {
    let inv = data.invocation()?;
    if let Err(e) = inv.exec.check_payload("the state", state.len()) {
        return Ok(Err(e.into()));
    }
    // Secrets in it are redacted where the journal is written.
    let args = StateArgs {
        state: parse_payload(&state),
    };
    data.immediate::<SetState>(args, |_| Value::Null)
        .await
        .map(|_| Ok(()))
}

pub async fn report_progress(data: &mut GuestData, percent: u8, message: String) -> WasmResult<()> {
    let args = Progress {
        percent: percent.min(100),
        message,
    };
    data.immediate::<ReportProgress>(args, |_| Value::Null)
        .await
        .map(|_| ())
}

pub async fn log(data: &mut GuestData, level: t::LogLevel, message: String) -> WasmResult<()> {
    let level = match level {
        t::LogLevel::Trace => "trace",
        t::LogLevel::Debug => "debug",
        t::LogLevel::Info => "info",
        t::LogLevel::Warn => "warn",
        t::LogLevel::Error => "error",
    };
    let args = LogLine {
        level: level.to_owned(),
        message: message.clone(),
    };
    data.immediate::<Log>(
        args,
        |inv| {
            let message = inv.exec.sandbox.redact(&message);
            tracing::info!(execution_id = %inv.exec.record.id, invocation = %inv.id, level, "{message}");
            Value::Null
        },
    )
    .await
    .map(|_| ())
}
