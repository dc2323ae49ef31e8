//! The operations kit in `ops/`: the Prometheus alert rules pass
//! `promtool check rules`, and every PromQL expression of the rules and of
//! the Grafana dashboard reads only series that a real `cerebelum serve`
//! exports, with labels (and label values) those series have.
//!
//! `promtool` comes from Debian's `prometheus` package, which
//! `scripts/prometheus.sh` installs (`scripts/test.sh` runs it). The
//! expressions' syntax is checked by promtool (Prometheus's own parser);
//! the metric and label names in them are read by the small lexer below,
//! since promtool has no command that lists them.

use cerebelum_harness as common;

use common::{Db, Remote, WAIT, free_port, guest, path};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const RULES: &str = "ops/prometheus/alerts.yml";
const DASHBOARD: &str = "ops/grafana/cerebelum.json";

#[test]
fn the_alert_rules_pass_promtool_and_each_says_what_to_do() {
    let file = common::root().join(RULES);
    let text = std::fs::read_to_string(&file).unwrap();
    let exprs = rule_expressions(&text);
    assert_eq!(
        promtool_check_rules(&file),
        exprs.len(),
        "promtool counts another number of rules than the `expr:` keys read here"
    );
    // Every alert has a summary and a description (what to do).
    let count = |key: &str| {
        text.lines()
            .filter(|l| l.trim_start().trim_start_matches("- ").starts_with(key))
            .count()
    };
    let alerts = count("alert:");
    assert!(alerts >= 4, "{alerts} alerts");
    assert_eq!(count("summary:"), alerts, "an alert without a summary");
    assert_eq!(
        count("description:"),
        alerts,
        "an alert without a description"
    );
}

#[test]
fn the_dashboard_and_the_alerts_read_only_series_the_server_exports() {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(common::root().join(DASHBOARD)).unwrap())
            .expect("the dashboard is JSON");
    let mut queries = Vec::new();
    dashboard_expressions(&dashboard, "dashboard", &mut queries);
    let from_dashboard = queries.len();
    assert!(
        from_dashboard >= 10,
        "{from_dashboard} queries in the dashboard"
    );
    // Prometheus's parser on the dashboard's queries: as recording rules.
    let dir = tempfile::tempdir().unwrap();
    let as_rules = dir.path().join("dashboard-rules.json");
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": expr}))
        .collect();
    let groups = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(&as_rules, groups.to_string()).unwrap();
    assert_eq!(promtool_check_rules(&as_rules), from_dashboard);
    let rules_text = std::fs::read_to_string(common::root().join(RULES)).unwrap();
    for (rule, expr) in rule_expressions(&rules_text) {
        queries.push((format!("{RULES}, rule {rule}"), expr));
    }
    let variables = dashboard_variables(&dashboard);

    let scrape = scrape_after_a_workload();
    let exported = Exported::parse(&scrape);
    let mut errors = Vec::new();
    for (place, expr) in &queries {
        match parse_promql(expr) {
            Ok(query) => exported.check(&query, &mut errors, place),
            Err(e) => errors.push(format!("{place}: {e}: {expr}")),
        }
    }
    for (name, selector, label) in &variables {
        let place = format!("{DASHBOARD}, variable ${name}");
        match parse_promql(selector) {
            Ok(mut query) => {
                query.grouping.push(label.clone());
                exported.check(&query, &mut errors, &place)
            }
            Err(e) => errors.push(format!("{place}: {e}: {selector}")),
        }
    }
    assert!(
        errors.is_empty(),
        "queries of the operations kit that the server's /metrics does not answer:\n{}",
        errors.join("\n")
    );
    // promtool's own lint of the exposition. It reads the Prometheus
    // text format, not OpenMetrics: `# EOF` goes, and its one complaint
    // that is OpenMetrics' rule, not a fault (a counter's HELP names the
    // family, `x`, and its sample `x_total`), is left out.
    let text: String = scrape
        .lines()
        .filter(|l| *l != "# EOF")
        .map(|l| format!("{l}\n"))
        .collect();
    let lint = common::with_stdin(promtool(&["check", "metrics"]), &text);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    let problems: Vec<&str> = said
        .lines()
        .filter(|line| {
            let counter_help = line
                .strip_suffix("_total no help text")
                .and_then(|family| exported.families.get(family))
                .is_some_and(|kind| kind == "counter");
            !line.trim().is_empty() && !counter_help
        })
        .collect();
    assert!(
        problems.is_empty(),
        "promtool check metrics on the scrape:\n{}",
        problems.join("\n")
    );
}

/// `/metrics` of a real server on a temporary SQLite database, after a
/// workload that gives every labelled family a series: executions that
/// complete, fail on a sandbox limit and on a denied HTTP request, one
/// waiting (hibernated) for an approval, one waiting on a worker queue
/// nobody serves, and a refused API key.
fn scrape_after_a_workload() -> String {
    let db = Db::new();
    let key = db.tenant("acme", &["--memory-mb", "64"]);
    let port = free_port();
    let _server = db.serve_api(port, &["--hibernate-after-ms", "100"]);
    let cli = Remote::new(port, &key);
    cli.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
    cli.ok(&["upload", path(&guest("hostile")), "--name", "hostile"]);
    let start = |args: &[&str]| cli.ok(&[&["start"][..], args].concat()).trim().to_owned();
    for (package, workflow, input, status) in [
        ("kit", "noop3", "{}", "completed"),
        (
            "kit",
            "run_step",
            r#"{"step": "memory_bomb", "input": null}"#,
            "failed",
        ),
        (
            "hostile",
            "fetch",
            r#"{"url": "http://127.0.0.1:9/"}"#,
            "failed",
        ),
    ] {
        let id = start(&[package, workflow, "--input", input]);
        let ended = cli.wait_ended(&id, WAIT);
        assert_eq!(ended["status"], status, "{workflow}: {ended}");
    }
    start(&["kit", "approval", "--input", r#"{"key": "ship"}"#]);
    start(&[
        "kit",
        "one_step",
        "--input",
        "{}",
        "--worker-queue",
        "devops",
    ]);
    Remote::new(port, "not-a-key").fails(&["packages"]);

    let deadline = Instant::now() + WAIT;
    loop {
        let reply = common::http_request(port, "GET", "/metrics", &[], "");
        assert_eq!(reply.status, 200, "{}", reply.head);
        let has = |start: &str| reply.body.lines().any(|l| l.starts_with(start));
        // The queue nobody serves has its task and 0 workers.
        if has(r#"cerebelum_tasks_queued{tenant="acme",queue="devops"} 1"#)
            && has(r#"cerebelum_workers{tenant="acme",queue="devops"} 0"#)
            && has(r#"cerebelum_executions_open{tenant="acme",status="waiting"}"#)
        {
            return reply.body;
        }
        assert!(
            Instant::now() < deadline,
            "no queued task and no waiting execution in /metrics:\n{}",
            reply.body
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The series of a scrape: for each series name (as Prometheus stores it:
/// `…_total`, `…_bucket`), its family and the values of each label.
struct Exported {
    /// Family name → type, from the `# TYPE` lines.
    families: BTreeMap<String, String>,
    series: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

/// Labels Prometheus attaches to every series of a scrape target.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

impl Exported {
    fn parse(text: &str) -> Self {
        let mut families = BTreeMap::new();
        let mut series: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                families.insert(name.to_owned(), kind.to_owned());
            } else if !line.starts_with('#') && !line.is_empty() {
                let (name, labels) = sample_line(line);
                let entry = series.entry(name).or_default();
                for (k, v) in labels {
                    entry.entry(k).or_default().insert(v);
                }
            }
        }
        // Prometheus's own series of every target: only target labels.
        series.insert("up".to_owned(), BTreeMap::new());
        let exported = Self { families, series };
        for name in exported.series.keys().filter(|n| *n != "up") {
            assert!(
                exported.family_of(name).is_some(),
                "series {name} of no declared family: the suffixes below miss a type"
            );
        }
        exported
    }

    /// The series names a family of `kind` is stored as.
    fn series_names(family: &str, kind: &str) -> Vec<String> {
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            "summary" => &["", "_sum", "_count"],
            "info" => &["_info"],
            "gaugehistogram" => &["_bucket", "_gsum", "_gcount"],
            _ => &[""],
        };
        let mut names: Vec<String> = suffixes.iter().map(|s| format!("{family}{s}")).collect();
        // Counters, histograms and summaries may carry their creation time.
        if ["counter", "histogram", "summary"].contains(&kind) {
            names.push(format!("{family}_created"));
        }
        names
    }

    fn family_of(&self, series: &str) -> Option<(&str, &str)> {
        self.families
            .iter()
            .find(|(family, kind)| Self::series_names(family, kind).iter().any(|n| n == series))
            .map(|(f, k)| (f.as_str(), k.as_str()))
    }

    /// Adds to `errors` what of `query` the scrape does not have.
    fn check(&self, query: &Query, errors: &mut Vec<String>, place: &str) {
        let mut labels: BTreeSet<&str> = TARGET_LABELS.into_iter().collect();
        let mut unknown = false;
        for selector in &query.selectors {
            let name = &selector.metric;
            let Some(series) = self.series.get(name) else {
                let why = match (self.families.get(name), self.family_of(name)) {
                    (Some(kind), _) => format!(
                        "{name} is a {kind}: Prometheus stores it as {}",
                        Self::series_names(name, kind).join(", ")
                    ),
                    (None, Some((family, _))) => {
                        format!("{name} (of {family}) has no series after the test's workload")
                    }
                    (None, None) => format!(
                        "no metric {name}; the server exports {}",
                        self.families.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                };
                errors.push(format!("{place}: {why}"));
                unknown = true;
                continue;
            };
            labels.extend(series.keys().map(String::as_str));
            for (label, op, value) in &selector.matchers {
                let Some(values) = series.get(label) else {
                    if !TARGET_LABELS.contains(&label.as_str()) {
                        errors.push(format!(
                            "{place}: {name} has no label {label:?}; it has {:?}",
                            series.keys().collect::<Vec<_>>()
                        ));
                    }
                    continue;
                };
                // A literal value must be one the series has (a misspelled
                // status matches nothing); a regex or a dashboard variable
                // is not checked.
                if op == "=" && !value.contains('$') && !values.contains(value) {
                    errors.push(format!(
                        "{place}: no series {name}{{{label}={value:?}}}; its {label} values are {values:?}"
                    ));
                }
            }
        }
        // (The labels of a metric it does not know are not known either.)
        for label in query.grouping.iter().filter(|_| !unknown) {
            if !labels.contains(label.as_str()) {
                errors.push(format!(
                    "{place}: grouping by {label:?}, a label of none of its series ({labels:?})"
                ));
            }
        }
    }
}

/// A sample line's series name and labels.
fn sample_line(line: &str) -> (String, Vec<(String, String)>) {
    let end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = line[..end].to_owned();
    let mut labels = Vec::new();
    if line[end..].starts_with('{') {
        let tokens = lex(&line[end..]).unwrap();
        let mut matchers = Vec::new();
        read_matchers(&tokens, 1, &mut matchers).unwrap();
        labels = matchers.into_iter().map(|(k, _, v)| (k, v)).collect();
    }
    (name, labels)
}

/// The `expr` of every rule of a rules file (block scalars `|` and `>`,
/// plain and quoted one-line values), after the rule's name: the file's
/// PromQL. Whether this found them all is checked against promtool's
/// count.
fn rule_expressions(yaml: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut exprs = Vec::new();
    let mut rule = String::new();
    for (i, line) in lines.iter().enumerate() {
        let content = line.trim_start().trim_start_matches("- ");
        for key in ["alert:", "record:"] {
            if let Some(name) = content.strip_prefix(key) {
                rule = name.trim().to_owned();
            }
        }
        let Some(value) = content.strip_prefix("expr:") else {
            continue;
        };
        let indent = line.len() - content.len();
        let value = value.trim();
        let expr = if value.starts_with('|') || value.starts_with('>') {
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .copied()
                .collect();
            block.join("\n")
        } else if let Some(quoted) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            quoted.replace("\\\"", "\"").replace("\\\\", "\\")
        } else if let Some(quoted) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            quoted.replace("''", "'")
        } else {
            value.to_owned()
        };
        exprs.push((rule.clone(), expr));
    }
    exprs
}

/// Every `expr` of the dashboard (panels' targets, in rows or not), with
/// Grafana's variables replaced: `$__rate_interval` and the other
/// built-in intervals by `5m`, a variable of the dashboard (only in a
/// matcher's regex) by `.*`. A variable elsewhere is then a syntax error.
fn dashboard_expressions(value: &Value, place: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(object) => {
            let place = match object.get("title").and_then(Value::as_str) {
                Some(title) => format!("{DASHBOARD}, panel {title:?}"),
                None => place.to_owned(),
            };
            for (key, v) in object {
                match (key.as_str(), v) {
                    ("expr", Value::String(expr)) => {
                        out.push((place.clone(), grafana_to_promql(expr)))
                    }
                    // The variables' queries are Grafana's, not PromQL.
                    ("templating", _) => {}
                    _ => dashboard_expressions(v, &place, out),
                }
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|v| dashboard_expressions(v, place, out)),
        _ => {}
    }
}

/// The dashboard's query variables, `label_values(SELECTOR, LABEL)`: their
/// names, selectors and labels.
fn dashboard_variables(dashboard: &Value) -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] != "query" {
            continue;
        }
        let name = variable["name"].as_str().unwrap().to_owned();
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str())
            .unwrap();
        let args = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| {
                panic!("variable {name}: only label_values(SELECTOR, LABEL) is checked: {query}")
            });
        let (selector, label) = args
            .rsplit_once(',')
            .unwrap_or_else(|| panic!("variable {name}: label_values without a selector: {query}"));
        found.push((name, grafana_to_promql(selector), label.trim().to_owned()));
    }
    found
}

fn grafana_to_promql(expr: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = match after.strip_prefix('{') {
            Some(braced) => {
                let end = braced.find('}').expect("an unclosed ${");
                (&braced[..end], end + 2)
            }
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        out.push_str(if name.starts_with("__") { "5m" } else { ".*" });
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

/// `promtool check rules FILE`: the number of rules it found; panics with
/// promtool's words when the file is wrong.
fn promtool_check_rules(file: &Path) -> usize {
    let out = promtool(&["check", "rules", file.to_str().unwrap()])
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check rules {file:?}:\n{said}"
    );
    said.split("SUCCESS: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rule count in promtool's answer: {said}"))
}

fn promtool(args: &[&str]) -> Command {
    let found = Command::new("promtool").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "promtool is missing: scripts/prometheus.sh installs it (Debian's prometheus package)"
    );
    let mut command = Command::new("promtool");
    command.args(args);
    command
}

/// What a PromQL expression reads: its selectors, and the labels it
/// groups or matches by (`by`, `without`, `on`, `ignoring`, `group_left`,
/// `group_right`).
#[derive(Debug, Default)]
struct Query {
    selectors: Vec<Selector>,
    grouping: Vec<String>,
}

#[derive(Debug)]
struct Selector {
    metric: String,
    /// (label, operator, value)
    matchers: Vec<(String, String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Number,
    Op(&'static str),
}

const OPS: [&str; 24] = [
    "=~", "!~", "!=", "==", "<=", ">=", "(", ")", "{", "}", "[", "]", ",", "=", "<", ">", "+", "-",
    "*", "/", "%", "^", "@", ":",
];

/// PromQL's tokens (comments dropped).
fn lex(expr: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '"' || c == '\'' || c == '`' {
            let mut text = String::new();
            i += 1;
            loop {
                let Some(&d) = chars.get(i) else {
                    return Err("an unclosed string".into());
                };
                i += 1;
                if d == c {
                    break;
                }
                if d == '\\' && c != '`' {
                    let escaped = *chars.get(i).ok_or("an unclosed string")?;
                    i += 1;
                    text.push(match escaped {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    });
                } else {
                    text.push(d);
                }
            }
            tokens.push(Token::Str(text));
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // Numbers, durations (5m, 1h30m), 1e-3, 0x1f.
            i += 1;
            while i < chars.len() {
                let d = chars[i];
                let exponent = (d == '+' || d == '-') && matches!(chars[i - 1], 'e' | 'E');
                if d.is_ascii_alphanumeric() || d == '.' || d == '_' || exponent {
                    i += 1;
                } else {
                    break;
                }
            }
            tokens.push(Token::Number);
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            tokens.push(Token::Ident(chars[start..i].iter().collect()));
        } else {
            let rest: String = chars[i..].iter().take(2).collect();
            let op: &'static str = OPS
                .into_iter()
                .find(|op| rest.starts_with(op))
                .ok_or_else(|| format!("unexpected {c:?}"))?;
            i += op.chars().count();
            tokens.push(Token::Op(op));
        }
    }
    Ok(tokens)
}

/// Words that are never metric names: keywords, aggregation operators
/// (which may come before their `by (…)`), literals.
const KEYWORDS: [&str; 24] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "start",
    "end",
];
const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

fn parse_promql(expr: &str) -> Result<Query, String> {
    let tokens = lex(expr)?;
    let mut query = Query::default();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            Token::Ident(word) => {
                let lower = word.to_ascii_lowercase();
                let next = tokens.get(i + 1);
                if GROUPING.contains(&lower.as_str()) {
                    if next == Some(&Token::Op("(")) {
                        i = read_labels(&tokens, i + 2, &mut query.grouping)?;
                    } else if lower.starts_with("group_") {
                        i += 1;
                    } else {
                        return Err(format!("{word} without its label list"));
                    }
                } else if KEYWORDS.contains(&lower.as_str()) || next == Some(&Token::Op("(")) {
                    // A keyword, or a function (the word before its parenthesis).
                    i += 1;
                } else {
                    let mut matchers = Vec::new();
                    i = if next == Some(&Token::Op("{")) {
                        read_matchers(&tokens, i + 2, &mut matchers)?
                    } else {
                        i + 1
                    };
                    query.selectors.push(Selector {
                        metric: word.clone(),
                        matchers,
                    });
                }
            }
            Token::Op("{") => {
                let mut matchers = Vec::new();
                i = read_matchers(&tokens, i + 1, &mut matchers)?;
                let name = matchers
                    .iter()
                    .position(|(label, op, _)| label == "__name__" && op == "=")
                    .ok_or("a selector without a metric name")?;
                let (_, _, metric) = matchers.remove(name);
                query.selectors.push(Selector { metric, matchers });
            }
            // Ranges, subqueries: durations only.
            Token::Op("[") => {
                i = tokens[i..]
                    .iter()
                    .position(|t| *t == Token::Op("]"))
                    .map(|p| i + p + 1)
                    .ok_or("an unclosed [")?;
            }
            _ => i += 1,
        }
    }
    if query.selectors.is_empty() {
        return Err("no metric in it".into());
    }
    Ok(query)
}

/// Reads `label, label)` from `i`; the index after the `)`.
fn read_labels(tokens: &[Token], mut i: usize, out: &mut Vec<String>) -> Result<usize, String> {
    loop {
        match tokens.get(i) {
            Some(Token::Op(")")) => return Ok(i + 1),
            Some(Token::Op(",")) => i += 1,
            Some(Token::Ident(label) | Token::Str(label)) => {
                out.push(label.clone());
                i += 1;
            }
            other => return Err(format!("in a label list: {other:?}")),
        }
    }
}

/// Reads `label op "value", …}` from `i`; the index after the `}`.
fn read_matchers(
    tokens: &[Token],
    mut i: usize,
    out: &mut Vec<(String, String, String)>,
) -> Result<usize, String> {
    loop {
        match (tokens.get(i), tokens.get(i + 1), tokens.get(i + 2)) {
            (Some(Token::Op("}")), _, _) => return Ok(i + 1),
            (Some(Token::Op(",")), _, _) => i += 1,
            (
                Some(Token::Ident(label) | Token::Str(label)),
                Some(Token::Op(op @ ("=" | "!=" | "=~" | "!~"))),
                Some(Token::Str(value)),
            ) => {
                out.push((label.clone(), op.to_string(), value.clone()));
                i += 3;
            }
            other => return Err(format!("in a label matcher: {other:?}")),
        }
    }
}

#[test]
fn the_promql_reader_finds_metrics_and_labels() {
    let query = parse_promql(
        r#"sum by (le, instance) (rate(a_bucket{kind="step", x=~"$t"}[5m:1m] offset 1h))
           / on (tenant) group_left (queue) max without (job) (b) > bool 1e-3 unless c # d
           and {__name__="e", f!="g"} @ start()"#,
    )
    .unwrap();
    let metrics: Vec<&str> = query.selectors.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(metrics, ["a_bucket", "b", "c", "e"]);
    assert_eq!(query.grouping, ["le", "instance", "tenant", "queue", "job"]);
    assert_eq!(query.selectors[0].matchers.len(), 2);
    assert_eq!(
        query.selectors[3].matchers,
        [("f".to_owned(), "!=".to_owned(), "g".to_owned())]
    );
    assert_eq!(
        grafana_to_promql(r#"rate(x{t=~"$tenant"}[$__rate_interval]) + ${y}"#),
        r#"rate(x{t=~".*"}[5m]) + .*"#
    );
}
