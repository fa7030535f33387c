//! Running the real-kernel tests and the demo where IPVS is: on the host when it can, otherwise
//! in the VM.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::plan::{self, Entry, EntryKind, Results};
use crate::{KernelChoice, Result, provision, step, vm};

/// Where the real-kernel work ran, and what came of it.
#[derive(Debug)]
pub(crate) enum KernelOutcome {
    /// The user asked to skip the real-kernel tests.
    Skipped,
    /// They ran: where, and the counts.
    Ran {
        place: String,
        results: Results,
        ok: bool,
    },
}

impl KernelOutcome {
    pub(crate) fn ok(&self) -> bool {
        match self {
            KernelOutcome::Skipped => true,
            KernelOutcome::Ran { ok, results, .. } => {
                *ok && results.failed == 0 && results.passed + results.programs_ok > 0
            }
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            KernelOutcome::Skipped => {
                "SKIPPED (asked with --kernel skip / IPVS_TEST_KERNEL=skip)".into()
            }
            KernelOutcome::Ran { place, results, ok } => {
                let mut s = format!(
                    "{} passed, {} failed — {place}, kernel {}",
                    results.passed, results.failed, results.kernel
                );
                if results.programs_ok + results.programs_failed > 0 {
                    s += &format!(
                        "; programs {} ok, {} failed",
                        results.programs_ok, results.programs_failed
                    );
                }
                if !ok && results.failed == 0 {
                    s += " (the run itself failed)";
                }
                if results.passed + results.programs_ok == 0 {
                    s += " (nothing ran: that is a failure)";
                }
                for f in &results.failures {
                    s += &format!("\n      failed: {f}");
                }
                s
            }
        }
    }
}

/// Why the host cannot run IPVS tests directly, or `None` when it can.
fn host_lacks_ipvs() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_NET_ADMIN: u64 = 1 << 12;
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    if caps & CAP_NET_ADMIN == 0 || caps & CAP_SYS_ADMIN == 0 {
        return Some(
            "we lack CAP_NET_ADMIN and CAP_SYS_ADMIN (needed for IPVS and fresh namespaces)".into(),
        );
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let modules = Path::new("/lib/modules").join(release.trim());
    let builtin = std::fs::read_to_string(modules.join("modules.builtin")).unwrap_or_default();
    let has = Path::new("/proc/net/ip_vs").exists()
        || Path::new("/sys/module/ip_vs").exists()
        || builtin.lines().any(|l| l.ends_with("/ip_vs.ko"))
        || modules.join("kernel/net/netfilter/ipvs").exists();
    (!has).then(|| {
        format!(
            "the host kernel {} has no IPVS (built in or as a module)",
            release.trim()
        )
    })
}

enum Place {
    Host,
    Vm,
}

fn choose_place(choice: KernelChoice) -> Result<Option<Place>> {
    match (choice, host_lacks_ipvs()) {
        (KernelChoice::Skip, _) => Ok(None),
        (KernelChoice::Host, None) | (KernelChoice::Auto, None) => {
            println!("    the host kernel has IPVS and we have the privileges: running directly");
            Ok(Some(Place::Host))
        }
        (KernelChoice::Host, Some(why)) => Err(format!("--kernel host, but {why}")),
        (KernelChoice::Vm, _) => Ok(Some(Place::Vm)),
        (KernelChoice::Auto, Some(why)) => {
            println!("    {why}: running in a VM with a Debian kernel that has it");
            Ok(Some(Place::Vm))
        }
    }
}

/// Runs `entries` where IPVS is and reads back the results.
fn run_plan(place: Place, entries: &[Entry]) -> Result<KernelOutcome> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let work = target_dir()?
        .join("xtask")
        .join(format!("run-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let plan_path = work.join("plan.json");
    let results_path = work.join("results.json");
    plan::write_plan(entries, &plan_path)?;
    let (place, ok) = match place {
        Place::Host => {
            let status = Command::new(&exe)
                .arg("guest-run")
                .arg("--plan")
                .arg(&plan_path)
                .arg("--results")
                .arg(&results_path)
                .status()
                .map_err(|e| e.to_string())?;
            ("directly on the host".to_string(), status.success())
        }
        Place::Vm => {
            let kernel = provision::provision()?;
            let command = format!(
                "{} guest-run --plan {} --results {}",
                exe.display(),
                plan_path.display(),
                results_path.display()
            );
            let ok = vm::run_in_guest(&kernel, &command, &[&work])?;
            ("in a QEMU VM".to_string(), ok)
        }
    };
    let results = Results::read(&results_path)?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(KernelOutcome::Ran { place, results, ok })
}

fn target_dir() -> Result<PathBuf> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    v["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| "cargo metadata without target_directory".into())
}

/// Runs `cargo <args> --message-format=json-render-diagnostics` and returns the executables it
/// built, with the folder of the package each belongs to.
fn built_executables(
    args: &[&str],
    want_test: Option<bool>,
) -> Result<Vec<(String, PathBuf, PathBuf)>> {
    let out = Command::new(env!("CARGO"))
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("cargo {} failed", args.join(" ")));
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact"
            || want_test.is_some_and(|t| v["profile"]["test"] != t)
        {
            continue;
        }
        let Some(exe) = v["executable"].as_str() else {
            continue;
        };
        let manifest = v["manifest_path"].as_str().unwrap_or("");
        let package = Path::new(manifest)
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let target = v["target"]["name"].as_str().unwrap_or("?");
        found.push((
            format!("{package}::{target}"),
            PathBuf::from(exe),
            Path::new(manifest)
                .parent()
                .unwrap_or(Path::new("."))
                .to_path_buf(),
        ));
    }
    Ok(found)
}

/// Example binaries that are tools run on demand, not scenarios that prove something alone.
const EXAMPLE_TOOLS: &[&str] = &["::ipvs-list"];

/// Builds every test binary of the workspace and every example program, and lists them as plan
/// entries: the real-kernel tests of each test binary, then each example program.
fn build_plan(filter: Option<&str>) -> Result<Vec<Entry>> {
    step("building the test binaries (cargo test --workspace --all-features --no-run)");
    let mut entries: Vec<Entry> = built_executables(
        &["test", "--workspace", "--all-features", "--no-run"],
        Some(true),
    )?
    .into_iter()
    .map(|(name, exe, cwd)| Entry {
        name,
        exe,
        cwd,
        kind: EntryKind::Tests(filter.map(str::to_string)),
    })
    .collect();
    if filter.is_none() {
        build_daemon()?;
        step(
            "building the example programs (cargo build -p examples --bins); each runs and must exit 0",
        );
        entries.extend(
            built_executables(&["build", "-p", "examples", "--bins"], Some(false))?
                .into_iter()
                // Tools (not scenarios) are covered by their own real-kernel tests.
                .filter(|(name, _, _)| !EXAMPLE_TOOLS.iter().any(|tool| name.ends_with(tool)))
                .map(|(name, exe, cwd)| Entry {
                    name,
                    exe,
                    cwd,
                    kind: EntryKind::Program(Vec::new()),
                }),
        );
    }
    Ok(entries)
}

/// `cargo xtask kernel-tests`, also the last step of `cargo xtask test`.
pub(crate) fn run_kernel_tests(
    choice: KernelChoice,
    filter: Option<&str>,
) -> Result<KernelOutcome> {
    step("real-kernel tests");
    let Some(place) = choose_place(choice)? else {
        println!("    skipped, as asked");
        return Ok(KernelOutcome::Skipped);
    };
    let entries = build_plan(filter)?;
    run_plan(place, &entries)
}

/// Builds the node daemon, which the `node-daemon` example runs from beside its own executable.
fn build_daemon() -> Result<()> {
    step("building the node daemon (cargo build -p ipvs-proxy --bin ipvs-proxy)");
    let status = Command::new(env!("CARGO"))
        .args(["build", "-p", "ipvs-proxy", "--bin", "ipvs-proxy"])
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("building the node daemon failed".into());
    }
    Ok(())
}

/// The example the demo runs: the node daemon on a manifests folder.
const DEMO_EXAMPLE: &str = "node-daemon";

/// `cargo xtask demo`.
pub(crate) fn run_demo(choice: KernelChoice) -> Result<bool> {
    build_daemon()?;
    step(&format!(
        "building the demo (cargo build -p examples --bin {DEMO_EXAMPLE})"
    ));
    let status = Command::new(env!("CARGO"))
        .args(["build", "-p", "examples", "--bin", DEMO_EXAMPLE])
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("building the demo failed".into());
    }
    let exe = target_dir()?.join("debug").join(DEMO_EXAMPLE);
    let cwd = std::env::current_dir().map_err(|e| e.to_string())?;
    step("running the demo where IPVS is");
    let place = choose_place(choice)?.ok_or("the demo cannot be skipped")?;
    let entries = [Entry {
        name: "demo".into(),
        exe,
        cwd,
        kind: EntryKind::Program(Vec::new()),
    }];
    let outcome = run_plan(place, &entries)?;
    println!(
        "\ndemo: {}",
        if outcome.ok() {
            "traffic went where it should"
        } else {
            "FAILED"
        }
    );
    Ok(outcome.ok())
}

/// `cargo xtask bench`: the benchmarks that need the real kernel, built in release mode and run
/// where IPVS is. They print figures; they do not pass or fail on speed.
pub(crate) fn run_benchmarks(choice: KernelChoice) -> Result<bool> {
    step("building the real-kernel benchmarks (cargo bench -p integration --no-run)");
    let entries: Vec<Entry> = built_executables(&["bench", "-p", "integration", "--no-run"], None)?
        .into_iter()
        .filter(|(name, _, _)| name.contains("ipvs_bulk_load"))
        .map(|(name, exe, cwd)| Entry {
            name,
            exe,
            cwd,
            kind: EntryKind::Program(vec!["--bench".into()]),
        })
        .collect();
    if entries.is_empty() {
        return Err("no benchmark was built".into());
    }
    step("running the benchmarks where IPVS is");
    let place = choose_place(choice)?.ok_or("benchmarks cannot be skipped")?;
    let outcome = run_plan(place, &entries)?;
    Ok(outcome.ok())
}
