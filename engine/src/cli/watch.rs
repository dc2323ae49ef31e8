//! Following an execution: a progress bar fed by `report-progress` and one
//! line per journal event, until the execution ends.

use anyhow::Result;
use cerebelum::api::Client;
use cerebelum::api::convert::progress_of;
use cerebelum::api::service::WatchEvent;
use cerebelum::journal::{Call, Entry, Event, ShowContext, WORKFLOW};
use cerebelum::model::{ExecutionRecord, Status};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;
use tokio_stream::StreamExt;

/// One line about an execution.
pub(crate) fn summary(r: &ExecutionRecord) -> String {
    format!(
        "{}  {:<9} {}/{} v{}{}",
        r.id,
        r.status,
        r.package_name,
        r.workflow,
        r.package_version,
        notes(r)
    )
}

/// Executions as a table: a header, then a row each — id, status,
/// package/workflow and version, when it started (UTC) — with what else
/// there is to say about it after (see [`notes`]).
pub(crate) fn table(records: &[ExecutionRecord]) -> String {
    let rows: Vec<[String; 4]> = records
        .iter()
        .map(|r| {
            [
                r.id.clone(),
                r.status.to_string(),
                format!("{}/{} v{}", r.package_name, r.workflow, r.package_version),
                cerebelum::util::datetime(r.created_at_ms),
            ]
        })
        .collect();
    let header = ["ID", "STATUS", "WORKFLOW", "STARTED (UTC)"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 4]| {
        let mut out = String::new();
        for (cell, width) in cells.iter().zip(widths) {
            out.push_str(&format!("{cell:<width$}  "));
        }
        out
    };
    let mut out = line(header).trim_end().to_owned();
    for (row, r) in rows.iter().zip(records) {
        out.push('\n');
        let cells = [&*row[0], &*row[1], &*row[2], &*row[3]];
        // One line per execution: a multi-line error (a panic, a
        // traceback) is cut to its start here; `status ID` shows it whole.
        let notes = notes(r).replace('\n', " ");
        let notes = cerebelum::util::shorten(&notes, 200);
        out.push_str((line(cells).trim_end().to_owned() + &notes).trim_end());
    }
    out
}

/// What else there is to say about an execution, each part after two
/// spaces: whose child it is, what it continues, paused, when it wakes,
/// its result, engine failures, its error.
fn notes(r: &ExecutionRecord) -> String {
    let mut line = String::new();
    if let Some(parent) = &r.parent_id {
        line.push_str(&format!("  child of {parent}"));
    }
    if let Some(from) = &r.continued_from {
        line.push_str(&format!("  continues {from}"));
    }
    if r.paused && !r.status.is_terminal() {
        line.push_str(&format!("  PAUSED (cerebelum resume {})", r.id));
    }
    if let (Some(wake), false) = (r.wake_at_ms, r.status.is_terminal()) {
        // Due already: it runs as soon as an engine (`serve`) gets to it.
        match wake - now_ms() {
            ms if ms > 0 => line.push_str(&format!("  wakes in {:.1}s", ms as f64 / 1000.0)),
            _ => line.push_str("  due now"),
        }
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
        line.push_str(&format!("  error {}: {}", error.kind, error.message));
    }
    line
}

/// The durable sleeps of an execution still waiting, one line each: who
/// sleeps, for how long, when it is due, and what the Python SDK's
/// `sleep(ms, data)` recorded with it.
pub(crate) fn pending_sleeps(entries: &[Entry]) -> Vec<String> {
    let mut renderer = Renderer::default();
    let mut pending = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        match &e.event {
            Event::Call {
                call: call @ (Call::CallStep(_) | Call::StartStep(_)),
                ..
            } => {
                renderer.call(e.seq, call, true);
            }
            Event::Call {
                call: Call::Sleep(sleep),
                ..
            } => pending.push((i, sleep)),
            Event::Result { call, .. } => pending.retain(|(j, _)| entries[*j].seq != *call),
            _ => {}
        }
    }
    pending
        .into_iter()
        .map(|(i, sleep)| {
            let e = &entries[i];
            let mut line = format!(
                "  sleeping {} ms in [{}], due in {:.1}s",
                sleep.args.duration_ms,
                renderer.who(&e.invocation),
                (sleep.due_at - now_ms()).max(0) as f64 / 1000.0
            );
            // The record `sleep(ms, data)` journals just before its sleep.
            let data = entries[..i]
                .iter()
                .rev()
                .find(|p| p.invocation == e.invocation)
                .and_then(|p| match &p.event {
                    Event::Call {
                        call: Call::Record(r),
                        ..
                    } if r.args.name == "sleep" && !r.answer["data"].is_null() => {
                        Some(r.answer["data"].to_string())
                    }
                    _ => None,
                });
            if let Some(data) = data {
                line.push_str(&format!(": {data}"));
            }
            line
        })
        .collect()
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
        let from_workflow = e.invocation == WORKFLOW;
        let line = match &e.event {
            Event::Started(s) => format!("▶ started {}", s.workflow),
            // `sleep(ms, data)` of the Python SDK: what the wait is for.
            Event::Call {
                call: Call::Record(r),
                ..
            } if r.args.name == "sleep" => format!(
                "  [{}] ⏸ sleeping {} ms: {}",
                self.who(&e.invocation),
                r.answer["duration_ms"],
                r.answer["data"]
            ),
            Event::Call { call, .. } => return self.call(e.seq, call, from_workflow),
            Event::Attempt { call, attempt } => {
                let of_poll = self.calls.get(call).is_some_and(|c| c.starts_with("poll"));
                if attempt.attempt == 1 || of_poll {
                    return None;
                }
                format!("↻ {} attempt {}", attempt.step, attempt.attempt)
            }
            Event::AttemptFailed { failed, .. } => format!(
                "✗ {} attempt {} failed: {}; retrying in {} ms",
                failed.step,
                failed.attempt,
                failed.error.message,
                failed.retry_at - e.at_ms
            ),
            Event::PollCheck { check, .. } => format!("  not ready yet (check {})", check.check),
            Event::Served { served, .. } => format!(
                "  {} attempt {} ran on worker '{}'",
                served.step, served.attempt, served.worker
            ),
            Event::Result { call, outcome } => {
                let what = self.calls.get(call).cloned()?;
                let of_a_person = what.starts_with("approval '") || what.starts_with("signal '");
                if !from_workflow && !of_a_person {
                    return None;
                }
                match outcome {
                    Err(err) => format!("✗ {what}: {}: {}", err.kind, err.message),
                    Ok(v) => format!("✓ {what} → {v}"),
                }
            }
            Event::Finished(f) => match (f.status, &f.error) {
                (Status::Completed, _) => format!(
                    "■ completed: {}",
                    f.result.clone().unwrap_or(serde_json::Value::Null)
                ),
                (Status::Cancelled, _) => "■ cancelled".to_owned(),
                (_, Some(error)) => format!("■ failed: {}: {}", error.kind, error.message),
                (_, None) => "■ failed".to_owned(),
            },
            Event::Retried(_) => "↻ retried by an operator".to_owned(),
            Event::Upgraded(u) => format!(
                "⇡ upgraded by an operator from v{} to v{}",
                u.from_version, u.to_version
            ),
            Event::Output(out) => return self.output(&e.invocation, &out.text),
            Event::Usage(_) => return None,
        };
        Some(line)
    }

    /// What user code printed, a line each, after the name of the step
    /// (or `workflow`) that printed it.
    fn output(&self, invocation: &str, text: &str) -> Option<String> {
        let who = self.who(invocation);
        let lines: Vec<String> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| format!("  [{who}] {l}"))
            .collect();
        (!lines.is_empty()).then(|| lines.join("\n"))
    }

    /// Who runs `invocation`: `workflow`, or the step's name.
    fn who<'a>(&'a self, invocation: &'a str) -> &'a str {
        if invocation == WORKFLOW {
            return "workflow";
        }
        invocation
            .split_once('.')
            .and_then(|(seq, _)| self.calls.get(&seq.parse().ok()?))
            .map_or(invocation, |call| call.trim_start_matches("step "))
    }

    /// A line for the call at `seq` (remembered to name its result).
    fn call(&mut self, seq: i64, call: &Call, from_workflow: bool) -> Option<String> {
        let shown = call.show(&ShowContext {
            execution: &self.execution_id,
            names: &self.calls,
        });
        // Steps are named wherever they are called (their invocations
        // print as the step). What waits for a person is shown wherever it
        // waits (a Python workflow's approvals are made inside its steps),
        // everything else only from the workflow.
        let is_step = matches!(call, Call::CallStep(_) | Call::StartStep(_));
        let waits_for_a_person = matches!(call, Call::AwaitApproval(_) | Call::AwaitSignal(_));
        if !from_workflow && !is_step && !waits_for_a_person {
            return None;
        }
        if let Some(name) = shown.name {
            self.calls.insert(seq, name);
        }
        if !from_workflow && !waits_for_a_person {
            return None;
        }
        shown.line
    }
}

/// Follows execution `id` until it ends; returns its final record. If the
/// server goes away (a restart, a crash), reconnects for up to
/// `reconnect_for` and continues after the last event received.
pub(crate) async fn follow(
    ops: &Client,
    id: &str,
    reconnect_for: Duration,
) -> Result<ExecutionRecord> {
    let record = ops.execution(id).await?.record;
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
    let mut ops = ops.reconnect().await?;
    let mut lost_at: Option<std::time::Instant> = None;
    loop {
        let mut broken = None;
        match ops.watch(id, last_seq).await {
            Err(e) => broken = Some(e),
            Ok(mut events) => {
                while let Some(event) = events.next().await {
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
        let e = broken.unwrap_or_else(|| {
            cerebelum::Error::Unavailable("the event stream ended early".into())
        });
        if !e.is_transient() {
            bar.finish_and_clear();
            return Err(e.into());
        }
        // The server went away: reconnect and continue after `last_seq`.
        let since = *lost_at.get_or_insert_with(std::time::Instant::now);
        // A server that went away (killed, a cut network) reads as a
        // transport or h2 protocol error, whose words (and TLS hint) would
        // only mislead here; one that ended the stream says why (it is
        // shutting down).
        let text = e.to_string();
        tracing::debug!(error = %text, "watch stream broken");
        let why = if text.contains("h2 protocol error") || text.contains("transport error") {
            String::new()
        } else {
            format!(" ({text})")
        };
        print(format!("… connection lost{why}; reconnecting"));
        loop {
            if since.elapsed() > reconnect_for {
                bar.finish_and_clear();
                return Err(anyhow::Error::from(e).context(format!(
                    "gave up reconnecting after {} s",
                    reconnect_for.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            match ops.reconnect().await {
                Ok(reconnected) => {
                    ops = reconnected;
                    break;
                }
                Err(e) if e.is_transient() => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}
