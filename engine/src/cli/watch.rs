//! Following an execution: a progress bar fed by `report-progress` and one
//! line per journal event, until the execution ends.

use super::client::{Client, RemoteError};
use anyhow::Result;
use cerebelum::api::convert::progress_of;
use cerebelum::api::service::WatchEvent;
use cerebelum::model::{Entry, ExecutionRecord};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

/// One line about an execution.
pub(crate) fn summary(r: &ExecutionRecord) -> String {
    let mut line = format!(
        "{}  {:<9} {}/{} v{}",
        r.id, r.status, r.package_name, r.workflow, r.package_version
    );
    if let Some(wake) = r.wake_at_ms {
        line.push_str(&format!(
            "  wakes in {:.1}s",
            (wake - now_ms()) as f64 / 1000.0
        ));
    }
    if let Some(result) = &r.result {
        line.push_str(&format!("  result {result}"));
    }
    if r.engine_failures > 0 && !r.status.is_terminal() {
        line.push_str(&format!(
            "  stalled by {} engine error{} in a row (retried automatically): {}",
            r.engine_failures,
            if r.engine_failures == 1 { "" } else { "s" },
            r.engine_error.as_deref().unwrap_or("no message")
        ));
    }
    if let Some(error) = &r.error {
        line.push_str(&format!(
            "  error {}: {}",
            error["kind"].as_str().unwrap_or("error"),
            error["message"].as_str().unwrap_or_default()
        ));
    }
    line
}

fn now_ms() -> i64 {
    use cerebelum::clock::Clock;
    cerebelum::clock::SystemClock.now_ms()
}

/// Renders journal entries as human lines; remembers calls to name results.
#[derive(Default)]
struct Renderer {
    calls: HashMap<i64, String>,
    execution_id: String,
}

impl Renderer {
    fn line(&mut self, e: &Entry) -> Option<String> {
        let args = &e.payload["args"];
        let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let from_workflow = e.invocation == "wf";
        let line = match e.kind.as_str() {
            "started" => format!("▶ started {}", s(&e.payload["workflow"])),
            "call-step" | "start-step" => {
                let name = s(&args["step"]);
                self.calls.insert(e.seq, format!("step {name}"));
                if e.invocation != "wf" {
                    return None;
                }
                format!("→ step {name}")
            }
            "attempt" => {
                let n = e.payload["attempt"].as_u64().unwrap_or(1);
                let of_poll = self
                    .calls
                    .get(&e.ref_seq.unwrap_or(-1))
                    .is_some_and(|c| c.starts_with("poll"));
                if n == 1 || of_poll {
                    return None;
                }
                format!("↻ {} attempt {n}", s(&e.payload["step"]))
            }
            "attempt-failed" => format!(
                "✗ {} attempt {} failed: {}; retrying in {} ms",
                s(&e.payload["step"]),
                e.payload["attempt"],
                e.payload["error"]["message"].as_str().unwrap_or_default(),
                e.payload["retry_at"].as_i64().unwrap_or(e.at_ms) - e.at_ms
            ),
            "sleep" | "poll" | "await-approval" | "log" if !from_workflow => return None,
            "sleep" => {
                self.calls.insert(e.seq, "sleep".into());
                format!("⏸ sleeping {} ms (durable)", args["duration_ms"])
            }
            "poll" => {
                let name = s(&args["check_step"]);
                self.calls.insert(e.seq, format!("poll {name}"));
                format!(
                    "⟳ polling {name} every {} ms",
                    args["options"]["interval_ms"]
                )
            }
            "poll-check" => format!("  not ready yet (check {})", e.payload["check"]),
            "await-approval" => {
                let key = s(&args["key"]);
                self.calls.insert(e.seq, format!("approval '{key}'"));
                format!(
                    "⏳ waiting for approval '{key}': {}\n   approve: cerebelum approve {} {key} --payload '{{}}'   reject: cerebelum reject {} {key} --reason '...'",
                    s(&args["message"]),
                    self.execution_id,
                    self.execution_id
                )
            }
            "result" => {
                let what = self.calls.get(&e.ref_seq.unwrap_or(-1)).cloned()?;
                if e.invocation != "wf" {
                    return None;
                }
                match e.payload.get("err") {
                    Some(err) => format!("✗ {what}: {}: {}", s(&err["kind"]), s(&err["message"])),
                    None => format!("✓ {what} → {}", e.payload["ok"]),
                }
            }
            "log" => format!("  [{}] {}", s(&args["level"]), s(&args["message"])),
            "completed" => format!("■ completed: {}", e.payload["result"]),
            "failed" => format!(
                "■ failed: {}: {}",
                s(&e.payload["error"]["kind"]),
                s(&e.payload["error"]["message"])
            ),
            "cancelled" => "■ cancelled".to_owned(),
            "retried" => "↻ retried by an operator".to_owned(),
            _ => return None,
        };
        Some(line)
    }
}

/// Follows execution `id` until it ends; returns its final record. If the
/// server goes away (a restart, a crash), reconnects for up to
/// `reconnect_for` and continues after the last event received.
pub(crate) async fn follow(
    client: &Client,
    id: &str,
    reconnect_for: Duration,
) -> Result<ExecutionRecord> {
    let record = client.execution(id).await?.record;
    let tty = std::io::stderr().is_terminal();
    let bar = ProgressBar::new(100);
    if tty {
        bar.set_style(
            ProgressStyle::with_template("[{prefix}] {bar:30.cyan/blue} {pos:>3}% {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("█▉░"),
        );
        bar.set_prefix(record.workflow.clone());
        bar.enable_steady_tick(Duration::from_millis(200));
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let print = |line: String| {
        if tty {
            bar.println(line);
        } else {
            eprintln!("{line}");
        }
    };
    let mut renderer = Renderer {
        execution_id: id.to_owned(),
        ..Renderer::default()
    };
    let mut last_seq = 0;
    let mut client = client.reconnect().await?;
    let mut lost_at: Option<std::time::Instant> = None;
    loop {
        let mut broken = None;
        match client.watch(id, last_seq).await {
            Err(e) => broken = Some(e),
            Ok(mut events) => {
                while let Some(event) = events.recv().await {
                    match event {
                        Ok(WatchEvent::Entry(e)) => {
                            lost_at = None;
                            last_seq = e.seq;
                            if let Some(p) = progress_of(&e) {
                                if tty {
                                    bar.set_position(p.percent.into());
                                    bar.set_message(p.message);
                                } else {
                                    eprintln!(
                                        "[{}] {:>3}% {}",
                                        record.workflow, p.percent, p.message
                                    );
                                }
                            } else if let Some(line) = renderer.line(&e) {
                                print(line);
                            }
                        }
                        Ok(WatchEvent::Finished(record)) => {
                            bar.finish_and_clear();
                            return Ok(record);
                        }
                        Err(e) => {
                            broken = Some(e);
                            break;
                        }
                    }
                }
            }
        }
        let e = broken.unwrap_or_else(|| anyhow::anyhow!("the event stream ended early"));
        if !RemoteError::is_transient(&e) {
            bar.finish_and_clear();
            return Err(e);
        }
        // The server went away: reconnect and continue after `last_seq`.
        let since = *lost_at.get_or_insert_with(std::time::Instant::now);
        print(format!("… connection lost ({e}); reconnecting"));
        loop {
            if since.elapsed() > reconnect_for {
                bar.finish_and_clear();
                return Err(e.context(format!(
                    "gave up reconnecting after {} s",
                    reconnect_for.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            match client.reconnect().await {
                Ok(c) => {
                    client = c;
                    break;
                }
                Err(e) if RemoteError::is_transient(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}
