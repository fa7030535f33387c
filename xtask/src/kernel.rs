//! Running the real-kernel tests and the demo where IPVS is: on the host when it can, otherwise
//! in the VM.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::plan::{self, Entry, EntryKind, Results};
use crate::{KernelChoice, Result, control_plane, provision, step, vm};

/// Where the real-kernel work ran, and what came of it.
#[derive(Debug)]
pub(crate) enum KernelOutcome {
    /// The user asked to skip the real-kernel tests.
    Skipped,
    /// They could not run at all (a build or a start failed): why.
    Failed(String),
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
            KernelOutcome::Failed(_) => false,
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
            KernelOutcome::Failed(why) => format!("FAILED: {why}"),
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

pub(crate) enum Place {
    Host,
    Vm,
}

pub(crate) fn choose_place(choice: KernelChoice) -> Result<Option<Place>> {
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

/// What a plan's run needs beyond its entries.
#[derive(Default)]
pub(crate) struct RunNeeds {
    /// The guest needs the network (to reach a control plane on the host).
    pub(crate) network: bool,
    /// Variables for the test binaries.
    pub(crate) env: Vec<(&'static str, String)>,
    /// Host folders the binaries write to beside their results (a benchmark's reports).
    pub(crate) writable: Vec<PathBuf>,
    /// The VM's memory (a QEMU size; empty: the default).
    pub(crate) memory: &'static str,
    /// How long the guest may run when `IPVS_VM_TIMEOUT_SECS` does not say (`None`: the
    /// default of [`vm`]).
    pub(crate) timeout: Option<std::time::Duration>,
}

/// Runs `entries` where IPVS is and reads back the results.
pub(crate) fn run_plan(place: Place, entries: &[Entry], needs: RunNeeds) -> Result<KernelOutcome> {
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
                .envs(needs.env.iter().map(|(k, v)| (k, v)))
                .status()
                .map_err(|e| e.to_string())?;
            ("directly on the host".to_string(), status.success())
        }
        Place::Vm => {
            let kernel = provision::provision()?;
            let command = format!(
                "{} guest-run --in-vm{} --plan {} --results {}",
                exe.display(),
                if needs.network { " --network" } else { "" },
                plan_path.display(),
                results_path.display()
            );
            let mut writable = vec![work.as_path()];
            writable.extend(needs.writable.iter().map(PathBuf::as_path));
            let options = vm::GuestOptions {
                writable,
                memory: needs.memory,
                network: needs.network,
                env: needs.env,
                timeout: needs.timeout,
            };
            let ok = vm::run_in_guest(&kernel, &command, &options)?;
            ("in a QEMU VM".to_string(), ok)
        }
    };
    let results = Results::read(&results_path)?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(KernelOutcome::Ran { place, results, ok })
}

pub(crate) fn target_dir() -> Result<PathBuf> {
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

/// An executable a cargo command built.
pub(crate) struct Built {
    /// `folder::target`: the package's folder name and the target's name.
    pub(crate) name: String,
    pub(crate) exe: PathBuf,
    /// The package's folder, the working directory `cargo test` would give it.
    pub(crate) cwd: PathBuf,
    /// The package's folder name.
    package: String,
    /// A test harness (`true`) or a plain program such as a binary target (`false`).
    test: bool,
}

/// Runs `cargo <args> --message-format=json-render-diagnostics` and returns the executables it
/// built.
pub(crate) fn built_executables(args: &[&str]) -> Result<Vec<Built>> {
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
        if v["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(exe) = v["executable"].as_str() else {
            continue;
        };
        let manifest = Path::new(v["manifest_path"].as_str().unwrap_or(""));
        let package = manifest
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let target = v["target"]["name"].as_str().unwrap_or("?");
        found.push(Built {
            name: format!("{package}::{target}"),
            exe: PathBuf::from(exe),
            cwd: manifest.parent().unwrap_or(Path::new(".")).to_path_buf(),
            package,
            test: v["profile"]["test"] == true,
        });
    }
    Ok(found)
}

/// Example binaries that are tools run on demand, not scenarios that prove something alone.
const EXAMPLE_TOOLS: &[&str] = &["::ipvs-list"];

/// The folder of the package whose binaries are the example programs.
const EXAMPLES_PACKAGE: &str = "examples";

/// Builds every test binary of the workspace and every example program, and lists them as plan
/// entries: the real-kernel tests of each test binary, then each example program.
///
/// One cargo command builds them all: `cargo test` builds the binaries of every package that has
/// integration tests (the node daemon and the examples both do), with the same features as the
/// tests. Building the binaries in a second command with other features would compile the
/// shared dependencies twice — gigabytes of disk.
fn build_plan(filter: Option<&str>) -> Result<Vec<Entry>> {
    step(
        "building the test binaries, the node daemon and the example programs \
         (cargo test --workspace --all-features --no-run)",
    );
    let built = built_executables(&["test", "--workspace", "--all-features", "--no-run"])?;
    let (tests, programs): (Vec<Built>, Vec<Built>) = built.into_iter().partition(|b| b.test);
    let mut entries: Vec<Entry> = tests
        .into_iter()
        .map(|b| Entry {
            name: b.name,
            exe: b.exe,
            cwd: b.cwd,
            kind: EntryKind::Tests(filter.map(str::to_string)),
        })
        .collect();
    if filter.is_none() {
        if !programs.iter().any(|b| b.name.ends_with("::ipvs-proxy")) {
            return Err("cargo test did not build the node daemon (ipvs-proxy)".into());
        }
        entries.extend(
            programs
                .into_iter()
                .filter(|b| b.package == EXAMPLES_PACKAGE)
                // Tools (not scenarios) are covered by their own real-kernel tests.
                .filter(|b| !EXAMPLE_TOOLS.iter().any(|tool| b.name.ends_with(tool)))
                .map(|b| Entry {
                    name: b.name,
                    exe: b.exe,
                    cwd: b.cwd,
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
    run_plan(place, &entries, RunNeeds::default())
}

/// The libtest filter that selects the control-plane tests (the ignored tests under a
/// `control_plane` module).
const CONTROL_PLANE_FILTER: &str = "control_plane::";

/// `cargo xtask control-plane-tests`, also a step of `cargo xtask test`: builds (once) and
/// starts a real Kubernetes control plane on the host, then runs the control-plane tests where
/// IPVS is, with the network to reach it.
pub(crate) fn run_control_plane_tests(
    choice: KernelChoice,
    filter: Option<&str>,
) -> Result<KernelOutcome> {
    step("control-plane tests (a real Kubernetes control plane)");
    let Some(place) = choose_place(choice)? else {
        println!("    skipped, as asked");
        return Ok(KernelOutcome::Skipped);
    };
    let binaries = control_plane::ensure_built()?;
    let filter = match filter {
        Some(f) => format!("{CONTROL_PLANE_FILTER}{f}"),
        None => CONTROL_PLANE_FILTER.to_string(),
    };
    let entries = build_plan(Some(&filter))?;
    // QEMU's user-mode network shows the host's loopback to the guest at 10.0.2.2.
    let dial_host = match place {
        Place::Host => "127.0.0.1",
        Place::Vm => "10.0.2.2",
    };
    let plane =
        control_plane::ControlPlane::start(&binaries, &target_dir()?.join("xtask"), dial_host)?;
    let needs = RunNeeds {
        network: true,
        env: vec![("IPVS_CONTROL_PLANE", plane.info.display().to_string())],
        ..RunNeeds::default()
    };
    let outcome = run_plan(place, &entries, needs);
    let failed = match &outcome {
        Ok(o) => !o.ok(),
        Err(_) => true,
    };
    if failed {
        plane.print_logs();
    }
    plane.stop();
    outcome
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
    let outcome = run_plan(place, &entries, RunNeeds::default())?;
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
