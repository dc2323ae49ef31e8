//! Following an execution: a progress bar fed by `report-progress` and one
//! line per journal event, until the execution ends.

use anyhow::Result;
use cerebelum::model::{Entry, ExecutionRecord};
use cerebelum::store::SharedStore;
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

/// Follows execution `id` until it ends; returns its final record.
pub(crate) async fn follow(store: SharedStore, id: String) -> Result<ExecutionRecord> {
    let record = store.execution(&id).await?;
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
        execution_id: id.clone(),
        ..Renderer::default()
    };
    let mut last_seq = 0;
    loop {
        // Read the status first: entries committed before it are then seen.
        let record = store.execution(&id).await?;
        for e in store.journal(&id, last_seq).await? {
            last_seq = e.seq;
            if e.kind == "report-progress" && e.invocation == "wf" {
                let pct = e.payload["args"]["percent"].as_u64().unwrap_or(0);
                let msg = e.payload["args"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if tty {
                    bar.set_position(pct);
                    bar.set_message(msg);
                } else {
                    eprintln!("[{}] {pct:>3}% {msg}", record.workflow);
                }
            } else if let Some(line) = renderer.line(&e) {
                print(line);
            }
        }
        if record.status.is_terminal() {
            bar.finish_and_clear();
            return Ok(record);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
