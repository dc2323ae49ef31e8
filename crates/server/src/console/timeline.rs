//! An execution's timeline, built from its journal in one pass: a row per
//! call of user code (steps with their attempts, sleeps, polls with their
//! checks, approvals, HTTP requests, logs, progress), what the code
//! printed, and the start and end of the execution.

use super::html::{duration, json, time};
use crate::journal::{Call, Detail, Entry, Event, Outcome, ShowContext, WORKFLOW};
use crate::model::Status;
use maud::{Markup, PreEscaped, html};
use std::collections::HashMap;

/// One attempt of a step.
struct Attempt {
    number: u32,
    at_ms: i64,
    /// When it ended (failed, or its result), if it has.
    ended_ms: Option<i64>,
    error: Option<String>,
    retry_at: Option<i64>,
    worker: Option<String>,
    queue: Option<String>,
}

/// A row of the timeline.
struct Row {
    at_ms: i64,
    /// `step`, `sleep`, `poll`, `approval`, `http`, `log`, `progress`,
    /// `output`, `started`, `finished`, `retried`, `clock`.
    kind: &'static str,
    /// Who made it: `workflow` or `step NAME`.
    who: String,
    title: String,
    /// What is shown under the title.
    details: Markup,
    attempts: Vec<Attempt>,
    /// Poll checks that found nothing, and the last one's error.
    checks: u32,
    last_check_error: Option<String>,
    /// Sleeps and approvals: when it ends unless something else ends it.
    due_ms: Option<i64>,
    outcome: Option<(Outcome, i64)>,
    /// The seq of the last entry that made or changed it.
    seq: i64,
}

/// The row of the call at `call`, marked as changed by the entry at `seq`.
fn touch<'r>(
    rows: &'r mut [Row],
    calls: &HashMap<i64, usize>,
    call: i64,
    seq: i64,
) -> Option<&'r mut Row> {
    let row = calls.get(&call).map(|&i| &mut rows[i])?;
    row.seq = seq;
    Some(row)
}

impl Row {
    fn new(at_ms: i64, kind: &'static str, who: String, title: String) -> Self {
        Self {
            at_ms,
            kind,
            who,
            title,
            details: PreEscaped(String::new()),
            attempts: Vec::new(),
            checks: 0,
            last_check_error: None,
            due_ms: None,
            outcome: None,
            seq: 0,
        }
    }

    /// `done`, `failed`, `running` or `waiting`.
    fn state(&self) -> &'static str {
        match &self.outcome {
            Some((Ok(_), _)) => "done",
            Some((Err(_), _)) => "failed",
            None if matches!(self.kind, "sleep" | "approval" | "signal" | "poll") => "waiting",
            None if self.kind == "step" => "running",
            None => "done",
        }
    }
}

/// The latest progress an execution reported: percent and message.
#[derive(Clone)]
pub struct Progress {
    pub percent: u8,
    pub message: String,
}

/// What the timeline of an execution shows.
#[derive(Default)]
pub struct Timeline {
    rows: Vec<Row>,
    pub progress: Option<Progress>,
    /// The seq of the last entry read.
    pub last_seq: i64,
    pub entries: usize,
    /// Calls that take time, by seq: their row. Kept after their result:
    /// an operator's retry gives a failed step new attempts and a new
    /// result under the same seq.
    calls: HashMap<i64, usize>,
    steps: HashMap<i64, String>,
    /// What calls are called, by seq (see [`crate::journal::Shown::name`]).
    names: HashMap<i64, String>,
    /// Rows before this one have their seq set (see [`Timeline::extend`]).
    marked: usize,
}

/// Who runs `invocation`: `workflow`, or `step NAME`.
fn who(invocation: &str, steps: &HashMap<i64, String>) -> String {
    if invocation == WORKFLOW {
        return "workflow".into();
    }
    invocation
        .split_once('.')
        .and_then(|(seq, _)| steps.get(&seq.parse().ok()?))
        .map_or_else(|| invocation.to_owned(), |step| format!("step {step}"))
}

/// What a row shows under its title.
fn details(details: &[Detail]) -> Markup {
    html! {
        @for detail in details {
            @match detail {
                Detail::Json(value) => (json(value)),
                Detail::Text(text) => p { (text) },
                Detail::Code(code) => code { (code) },
            }
        }
    }
}

impl Timeline {
    /// The timeline of `entries`, in order.
    pub fn build(entries: &[Entry]) -> Self {
        let mut timeline = Self::default();
        timeline.extend(entries);
        timeline
    }

    /// Adds `entries`, which follow those read so far (a live view keeps
    /// one timeline and extends it, instead of building it anew).
    pub fn extend(&mut self, entries: &[Entry]) {
        let Self {
            rows,
            progress,
            calls,
            steps,
            names,
            marked,
            ..
        } = self;
        // Rows made by the previous entry get its seq at the next one.
        let mut previous = self.last_seq;
        for e in entries {
            for row in &mut rows[*marked..] {
                row.seq = previous;
            }
            (*marked, previous) = (rows.len(), e.seq);
            match &e.event {
                Event::Started(s) => rows.push(Row::new(
                    e.at_ms,
                    "started",
                    "engine".into(),
                    format!("started workflow {}", s.workflow),
                )),
                Event::Call { call, .. } => {
                    let cx = ShowContext {
                        execution: "",
                        names,
                    };
                    let shown = call.show(&cx);
                    if let Some(name) = &shown.name {
                        names.insert(e.seq, name.clone());
                    }
                    let Some(kind) = shown.row else { continue };
                    match call {
                        Call::CallStep(c) => steps.insert(e.seq, c.args.step.clone()),
                        Call::StartStep(c) => steps.insert(e.seq, c.args.step.clone()),
                        _ => None,
                    };
                    if let Call::ReportProgress(p) = call {
                        *progress = Some(Progress {
                            percent: p.args.percent,
                            message: p.args.message.clone(),
                        });
                    }
                    let mut row = Row::new(e.at_ms, kind, who(&e.invocation, steps), shown.title);
                    row.details = details(&shown.details);
                    row.due_ms = shown.due_ms;
                    if shown.waits {
                        calls.insert(e.seq, rows.len());
                    }
                    rows.push(row);
                }
                Event::Attempt { call, attempt } => {
                    if let Some(row) = touch(rows, calls, *call, e.seq) {
                        if row.kind == "poll" {
                            continue;
                        }
                        if let Some(last) = row.attempts.last_mut()
                            && last.ended_ms.is_none()
                        {
                            // A restart re-ran the attempt's journal.
                            last.ended_ms = Some(e.at_ms);
                        }
                        // An operator's retry of a step that failed: its
                        // error stays with the attempt that made it.
                        if let Some((Err(error), _)) = &row.outcome {
                            let error = format!("{}: {}", error.kind, error.message);
                            if let Some(last) = row.attempts.last_mut()
                                && last.error.is_none()
                            {
                                last.error = Some(error);
                            }
                            row.outcome = None;
                        }
                        row.attempts.push(Attempt {
                            number: attempt.attempt,
                            at_ms: e.at_ms,
                            ended_ms: None,
                            error: None,
                            retry_at: None,
                            worker: None,
                            queue: attempt.queue.clone(),
                        });
                    }
                }
                Event::AttemptFailed { call, failed } => {
                    if let Some(row) = touch(rows, calls, *call, e.seq)
                        && let Some(a) = row.attempts.last_mut()
                    {
                        a.ended_ms = Some(e.at_ms);
                        a.error = Some(format!("{}: {}", failed.error.kind, failed.error.message));
                        a.retry_at = Some(failed.retry_at);
                    }
                }
                Event::Served { call, served } => {
                    if let Some(row) = touch(rows, calls, *call, e.seq)
                        && let Some(a) = row.attempts.last_mut()
                    {
                        a.worker = Some(served.worker.clone());
                    }
                }
                Event::PollCheck { call, check } => {
                    if let Some(row) = touch(rows, calls, *call, e.seq) {
                        row.checks = row.checks.max(check.check);
                        row.last_check_error.clone_from(&check.error);
                    }
                }
                Event::Result { call, outcome } => {
                    if let Some(row) = touch(rows, calls, *call, e.seq) {
                        if let Some(a) = row.attempts.last_mut()
                            && a.ended_ms.is_none()
                        {
                            a.ended_ms = Some(e.at_ms);
                        }
                        row.outcome = Some((outcome.clone(), e.at_ms));
                    }
                }
                Event::Output(out) => {
                    let text = out.text.trim_end();
                    if text.is_empty() {
                        continue;
                    }
                    let mut row = Row::new(
                        e.at_ms,
                        "output",
                        who(&e.invocation, steps),
                        format!("{} printed", out.stream),
                    );
                    row.details = html! { pre.output { (text) } };
                    rows.push(row);
                }
                Event::Finished(f) => {
                    let mut row = Row::new(
                        e.at_ms,
                        "finished",
                        "engine".into(),
                        f.status.as_str().to_owned(),
                    );
                    row.outcome = Some((
                        match (f.status, &f.error) {
                            (Status::Completed, _) | (_, None) => {
                                Ok(f.result.clone().unwrap_or_default())
                            }
                            (_, Some(error)) => Err(error.clone()),
                        },
                        e.at_ms,
                    ));
                    rows.push(row);
                }
                Event::Retried(r) => rows.push(Row::new(
                    e.at_ms,
                    "retried",
                    "operator".into(),
                    format!("retried by an operator (it was {})", r.previous_status),
                )),
                Event::Upgraded(u) => rows.push(Row::new(
                    e.at_ms,
                    "upgraded",
                    "operator".into(),
                    format!(
                        "upgraded by an operator from v{} to v{}: its journal replayed cleanly \
                         against v{}'s code",
                        u.from_version, u.to_version, u.to_version
                    ),
                )),
                Event::Usage(_) => {}
            }
        }
        for row in &mut rows[*marked..] {
            row.seq = previous;
        }
        *marked = rows.len();
        self.last_seq = previous;
        self.entries += entries.len();
    }

    /// The timeline as an `<ol>`; `now_ms` for countdowns. With
    /// `max_rows`, only the last rows, after a line that says how many
    /// earlier ones are not shown and links to all of them (`?all=1`).
    /// Each row carries its index (`data-row`), so a live view can replace
    /// or add rows one by one (see [`super::live`]).
    pub fn html(&self, now_ms: i64, max_rows: Option<usize>) -> Markup {
        let skip = max_rows.map_or(0, |max| self.rows.len().saturating_sub(max));
        html! {
            ol.timeline data-max=[max_rows] {
                (more_line(skip, self.rows.len()))
                @for i in skip..self.rows.len() { (self.row_html(i, now_ms)) }
            }
        }
    }

    /// The seq of the last journal entry that made or changed row `i`.
    pub fn row_seq(&self, i: usize) -> i64 {
        self.rows[i].seq
    }

    /// How many rows the timeline has.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Row `i` as an `<li>`; `now_ms` for its countdown.
    pub fn row_html(&self, i: usize, now_ms: i64) -> Markup {
        let start = self.rows.first().map_or(0, |r| r.at_ms);
        let row = &self.rows[i];
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        html! {
            li class={ "row kind-" (row.kind) " state-" (row.state()) } data-row=(i) {
                div.when title=(super::html::utc(row.at_ms)) { "+" (duration(row.at_ms - start)) }
                div.what {
                    div.title {
                        span.who { (row.who) } " " (row.title)
                        @if row.kind == "step" && !row.attempts.is_empty() {
                            " " span.muted { (row.attempts.len()) " attempt" (plural(row.attempts.len())) }
                        }
                        @if row.kind == "poll" && row.checks > 0 {
                            " " span.muted { (row.checks) " check" (plural(row.checks as usize)) " not ready" }
                        }
                        @if let (Some(due), None) = (row.due_ms, &row.outcome) {
                            " " span.due {
                                "due " (time(due)) " · "
                                span.countdown data-due=(due) { "in " (duration(due - now_ms)) }
                            }
                        }
                    }
                    (row.details)
                    @if !row.attempts.is_empty() {
                        ul.attempts { @for a in &row.attempts { (attempt_html(a)) } }
                    }
                    @if let Some(error) = &row.last_check_error {
                        div.muted { "last check: " (error) }
                    }
                    @match &row.outcome {
                        Some((Ok(value), at)) if row.kind != "finished" || !value.is_null() => {
                            div.outcome.ok { "→ after " (duration(at - row.at_ms)) (json(value)) }
                        }
                        Some((Err(error), _)) => {
                            div.outcome.error {
                                "✗ " (error.kind.to_string()) ": " (error.message)
                                @if let Some(details) = &error.details { (json(details)) }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

/// An attempt of a step, as an `<li>`.
fn attempt_html(a: &Attempt) -> Markup {
    html! {
        li {
            "attempt " (a.number)
            @if let Some(queue) = &a.queue { " on queue " code { (queue) } }
            @if let Some(worker) = &a.worker { " by worker " code { (worker) } }
            @match a.ended_ms {
                Some(end) => { ", " (duration(end - a.at_ms)) }
                None => { ", running" }
            }
            @if let Some(error) = &a.error { " " span.error { "failed: " (error) } }
            @if let Some(at) = a.retry_at { " · retry at " (time(at)) }
        }
    }
}

/// The line above a cut timeline that says how many of its `total` rows
/// (the first `skip`) are not shown; empty when none is hidden.
pub fn more_line(skip: usize, total: usize) -> Markup {
    html! {
        @if skip > 0 {
            li.row.more {
                div.when {}
                div.what {
                    (skip) " earlier rows are not shown. "
                    a #show-all href="?all=1" { "Show all " (total) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{
        Attempt as AttemptEntry, AttemptFailed, CallError, CallStep, ErrorKind, StepArgs,
    };
    use serde_json::json;

    fn entry(seq: i64, invocation: &str, event: Event) -> Entry {
        Entry {
            seq,
            invocation: invocation.into(),
            event,
            at_ms: 1000 + seq * 10,
        }
    }

    #[test]
    fn a_step_shows_its_attempts_and_result() {
        let entries = vec![
            entry(
                1,
                "wf",
                Event::Call {
                    hash: String::new(),
                    call: Call::CallStep(CallStep {
                        args: StepArgs {
                            step: "deploy".into(),
                            input: json!({"host": "web-1"}),
                            options: None,
                        },
                    }),
                },
            ),
            entry(
                2,
                "engine",
                Event::Attempt {
                    call: 1,
                    attempt: AttemptEntry {
                        step: "deploy".into(),
                        attempt: 1,
                        invocation: None,
                        queue: None,
                    },
                },
            ),
            entry(
                3,
                "engine",
                Event::AttemptFailed {
                    call: 1,
                    failed: AttemptFailed {
                        step: "deploy".into(),
                        attempt: 1,
                        error: CallError::new(ErrorKind::Other("ssh".into()), "ssh <refused>"),
                        retry_at: 2000,
                    },
                },
            ),
            entry(
                4,
                "engine",
                Event::Attempt {
                    call: 1,
                    attempt: AttemptEntry {
                        step: "deploy".into(),
                        attempt: 2,
                        invocation: None,
                        queue: None,
                    },
                },
            ),
            entry(
                5,
                "wf",
                Event::Result {
                    call: 1,
                    outcome: Ok(json!({"ok": true})),
                },
            ),
        ];
        let timeline = Timeline::build(&entries);
        assert_eq!(timeline.rows.len(), 1);
        assert_eq!(timeline.rows[0].attempts.len(), 2);
        let cut = timeline.html(0, Some(0)).into_string();
        assert!(cut.contains("1 earlier rows are not shown"), "{cut}");
        assert!(
            cut.contains("href=\"?all=1\"") && !cut.contains("step deploy"),
            "{cut}"
        );
        let html = timeline.html(0, None).into_string();
        assert!(html.contains("step deploy"), "{html}");
        assert!(html.contains("2 attempts"), "{html}");
        assert!(html.contains("ssh &lt;refused&gt;"), "escaped: {html}");
        assert!(html.contains("state-done"), "{html}");
        assert!(html.contains("&quot;ok&quot;: true"), "{html}");
    }
}
