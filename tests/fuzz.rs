//! The fuzzed front door, briefly (issue 19): each target of
//! `common::fuzz` on a few hundred hostile inputs or a few seconds, on the
//! real engine and SQLite. The long runs: `cargo bench -p cerebelum-engine
//! --bench fuzz -- --seconds 600`.

use cerebelum_harness as common;

use common::fuzz::{self, Budget, Front, Report};
use std::sync::Arc;
use std::time::Duration;

fn budget(cases: u64) -> Budget {
    Budget {
        cases,
        time: Duration::from_secs(4),
    }
}

fn clean(report: Report) {
    assert!(report.tried > 0, "{}: no input tried", report.name);
    assert!(
        report.failures.is_empty(),
        "{}: {} of {} inputs failed:\n{}",
        report.name,
        report.failures.len(),
        report.tried,
        report.failures.join("\n")
    );
}

#[test]
fn uploads_of_hostile_bytes_are_refused_cleanly() {
    let front = Front::new();
    let real = Arc::new(std::fs::read(common::guest("testkit")).unwrap());
    clean(fuzz::run(
        "upload",
        fuzz::package_bytes(real),
        budget(200),
        |bytes| front.upload(bytes),
    ));
}

#[test]
fn start_inputs_are_accepted_exactly_when_they_are_json() {
    let front = Front::new();
    clean(fuzz::run("json", fuzz::json_text(), budget(300), |text| {
        front.start(text)
    }));
}

#[test]
fn allow_lists_and_requests_never_panic() {
    clean(fuzz::run(
        "allow_list",
        fuzz::allow_entries(),
        budget(2000),
        fuzz::allow_list,
    ));
}

#[test]
fn every_request_message_decodes_or_refuses() {
    clean(fuzz::run(
        "proto",
        fuzz::proto_bytes(),
        budget(5000),
        fuzz::proto,
    ));
}

#[test]
fn the_other_parsers_never_panic() {
    clean(fuzz::run(
        "parsers",
        fuzz::parser_text(),
        budget(5000),
        fuzz::parsers,
    ));
}

#[test]
fn a_failing_target_is_reported_with_its_input() {
    let report = fuzz::run("demo", 0u32..10, budget(200), |n| match n {
        7 => Err("seven is refused".into()),
        8 => panic!("eight panics"),
        _ => Ok(()),
    });
    assert!(report.tried >= 100, "{}", report.tried);
    assert!(
        report
            .failures
            .iter()
            .any(|f| f.contains("seven is refused") && f.contains("input: 7")),
        "{:?}",
        report.failures
    );
    assert!(
        report
            .failures
            .iter()
            .any(|f| f.contains("panicked: eight panics") && f.contains("input: 8")),
        "{:?}",
        report.failures
    );
}
