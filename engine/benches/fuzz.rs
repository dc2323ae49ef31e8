//! The fuzz command (issue 19): `cargo bench -p cerebelum-engine --bench
//! fuzz -- --seconds 600` runs each target of `crates/harness/src/fuzz.rs` for
//! that long (default 60 s each; `-- --only upload,json` for some) on the
//! real engine and a SQLite file, and prints inputs tried and failures per
//! target. Failures (target: 0) are written, with their inputs, to
//! `target/fuzz-failures/<target>.txt`; the exit code is 1 if any.

use cerebelum_harness as common;

use common::fuzz::{self, Budget, Front, Report};
use std::sync::Arc;
use std::time::Duration;

fn main() {
    let seconds: u64 = common::bench_arg("--seconds")
        .map(|s| s.parse().expect("--seconds takes a number"))
        .unwrap_or(60);
    let only = common::bench_arg("--only");
    let wanted = |name: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|n| n.trim() == name))
    };
    let budget = Budget {
        cases: u64::MAX,
        time: Duration::from_secs(seconds),
    };
    // Failed inputs are printed by the report; the panic hook's own lines
    // would bury the progress.
    std::panic::set_hook(Box::new(|_| {}));
    println!("fuzzing the front door, {seconds} s per target");
    let mut reports: Vec<Report> = Vec::new();
    let mut report = |r: Report| {
        println!(
            "{:<10} {:>10} inputs  {:>6.0} /s  {} failures   [target 0]",
            r.name,
            r.tried,
            r.tried as f64 / seconds.max(1) as f64,
            r.failures.len()
        );
        reports.push(r);
    };
    if wanted("upload") || wanted("json") {
        let front = Front::new();
        if wanted("upload") {
            let real = Arc::new(std::fs::read(common::guest("testkit")).unwrap());
            report(fuzz::run(
                "upload",
                fuzz::package_bytes(real),
                budget,
                |b| front.upload(b),
            ));
        }
        if wanted("json") {
            report(fuzz::run("json", fuzz::json_text(), budget, |t| {
                front.start(t)
            }));
        }
    }
    if wanted("allow_list") {
        report(fuzz::run(
            "allow_list",
            fuzz::allow_entries(),
            budget,
            fuzz::allow_list,
        ));
    }
    if wanted("proto") {
        report(fuzz::run("proto", fuzz::proto_bytes(), budget, fuzz::proto));
    }
    if wanted("parsers") {
        report(fuzz::run(
            "parsers",
            fuzz::parser_text(),
            budget,
            fuzz::parsers,
        ));
    }
    let failed: Vec<&Report> = reports.iter().filter(|r| !r.failures.is_empty()).collect();
    if failed.is_empty() {
        println!("no failures");
        return;
    }
    let dir = common::root().join("target").join("fuzz-failures");
    std::fs::create_dir_all(&dir).unwrap();
    for r in failed {
        let file = dir.join(format!("{}.txt", r.name));
        std::fs::write(&file, r.failures.join("\n\n")).unwrap();
        println!("{}: failures written to {}", r.name, file.display());
    }
    std::process::exit(1);
}
