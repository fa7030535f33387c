//! `cargo xtask test`: every check and test, in order, with one summary at the end.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::kernel::{self, KernelOutcome};
use crate::plan::parse_test_result;
use crate::{KernelChoice, Result, step};

struct Row {
    what: &'static str,
    ok: bool,
    detail: String,
}

fn cargo(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO"));
    c.args(args);
    c
}

fn run_check(what: &'static str, mut command: Command) -> Row {
    step(&format!("{what}: {command:?}"));
    let ok = command.status().is_ok_and(|s| s.success());
    Row {
        what,
        ok,
        detail: if ok { "ok".into() } else { "FAILED".into() },
    }
}

/// Runs the host-side tests, streaming their output and counting libtest's result lines.
fn run_host_tests() -> (Row, u64, u64) {
    let mut command = cargo(&["test", "--workspace", "--all-features"]);
    step(&format!("unit and doc tests: {command:?}"));
    let (mut passed, mut failed, mut ignored) = (0, 0, 0);
    let ok = match command.stdout(Stdio::piped()).spawn() {
        Ok(mut child) => {
            if let Some(out) = child.stdout.take() {
                for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
                    println!("{line}");
                    if let Some((p, f)) = parse_test_result(&line) {
                        passed += p;
                        failed += f;
                        ignored += line
                            .split(';')
                            .find_map(|p| p.trim().strip_suffix(" ignored"))
                            .and_then(|n| n.parse::<u64>().ok())
                            .unwrap_or(0);
                    }
                }
            }
            child.wait().is_ok_and(|s| s.success())
        }
        Err(_) => false,
    };
    let detail = format!(
        "{passed} passed, {failed} failed ({ignored} ignored here: the real-kernel tests, run below)"
    );
    (
        Row {
            what: "unit and doc tests",
            ok: ok && failed == 0,
            detail,
        },
        passed,
        failed,
    )
}

/// `cargo xtask test`.
pub(crate) fn test_everything(choice: KernelChoice) -> Result<bool> {
    let mut rows = vec![run_check(
        "format",
        cargo(&["fmt", "--all", "--", "--check"]),
    )];
    rows.push(run_check(
        "clippy",
        cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]),
    ));
    let (row, mut passed, mut failed) = run_host_tests();
    rows.push(row);
    let mut doc = cargo(&["doc", "--workspace", "--no-deps", "--all-features"]);
    doc.env("RUSTDOCFLAGS", "-D warnings");
    rows.push(run_check("docs", doc));
    let kernel = match kernel::run_kernel_tests(choice, None) {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("xtask: real-kernel tests could not run: {e}");
            rows.push(Row {
                what: "real-kernel tests",
                ok: false,
                detail: format!("FAILED: {e}"),
            });
            return Ok(summary(&rows, passed, failed + 1));
        }
    };
    if let KernelOutcome::Ran { results, .. } = &kernel {
        passed += results.passed;
        failed += results.failed;
    }
    rows.push(Row {
        what: "real-kernel tests",
        ok: kernel.ok(),
        detail: kernel.describe(),
    });
    let control_plane = kernel::run_control_plane_tests(choice, None).unwrap_or_else(|e| {
        eprintln!("xtask: control-plane tests could not run: {e}");
        KernelOutcome::Failed(e)
    });
    if let KernelOutcome::Ran { results, .. } = &control_plane {
        passed += results.passed;
        failed += results.failed;
    }
    if let KernelOutcome::Failed(_) = &control_plane {
        failed += 1;
    }
    rows.push(Row {
        what: "control-plane tests",
        ok: control_plane.ok(),
        detail: control_plane.describe(),
    });
    Ok(summary(&rows, passed, failed))
}

fn summary(rows: &[Row], passed: u64, failed: u64) -> bool {
    step("summary");
    for row in rows {
        println!("  {:<20} {}", row.what, row.detail);
    }
    let ok = rows.iter().all(|r| r.ok);
    println!(
        "{}",
        if ok {
            "all checks passed"
        } else {
            "SOME CHECKS FAILED"
        }
    );
    println!("summary: {passed} passed, {failed} failed");
    ok
}
