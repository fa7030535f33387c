//! Running the real-kernel tests and the demo where IPVS is: on the host when it can, otherwise
//! in the VM.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::plan::{self, Entry, EntryKind, Results};
use crate::{KernelChoice, Result, control_plane, moby_peer, provision, step, vm};

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

/// What a plan's run needs beyond its entries.
#[derive(Default)]
struct RunNeeds {
    /// The guest needs the network (to reach a control plane on the host).
    network: bool,
    /// Variables for the test binaries.
    env: Vec<(&'static str, String)>,
}

/// Runs `entries` where IPVS is and reads back the results.
fn run_plan(place: Place, entries: &[Entry], needs: RunNeeds) -> Result<KernelOutcome> {
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
            let options = vm::GuestOptions {
                writable: vec![&work],
                network: needs.network,
                env: needs.env,
                ..vm::GuestOptions::default()
            };
            let ok = vm::run_in_guest(&kernel, &command, &options)?;
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

/// An executable a cargo command built.
struct Built {
    /// `folder::target`: the package's folder name and the target's name.
    name: String,
    exe: PathBuf,
    /// The package's folder, the working directory `cargo test` would give it.
    cwd: PathBuf,
    /// The package's folder name.
    package: String,
    /// A test harness (`true`) or a plain program such as a binary target (`false`).
    test: bool,
}

/// Runs `cargo <args> --message-format=json-render-diagnostics` and returns the executables it
/// built.
fn built_executables(args: &[&str]) -> Result<Vec<Built>> {
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

/// Runs the desired-state computation benchmark (criterion, on the host: it needs no kernel)
/// for the same cluster sizes and returns its figures as a section of `BENCHMARKS.md`.
fn desired_state_section(sizes: &str) -> Result<String> {
    step(
        "the desired-state computation alone (cargo bench -p svc-controller --bench desired_state)",
    );
    let output = Command::new(env!("CARGO"))
        .args(["bench", "-p", "svc-controller", "--bench", "desired_state"])
        .env("DESIRED_STATE_BENCH_SIZES", sizes)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    if !output.status.success() {
        return Err("the desired-state benchmark failed".into());
    }
    // Criterion prints each benchmark's name, then `time: [low estimate high]` (on the same
    // line when the name is short) and `thrpt:` when a throughput is set.
    let mut rows = Vec::new();
    let mut name = String::new();
    for line in stdout.lines() {
        let trimmed = line.trim();
        if !line.starts_with(' ') && !trimmed.is_empty() && !trimmed.starts_with("Benchmarking") {
            name = trimmed
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        }
        if let Some(rest) = trimmed.split("time:").nth(1) {
            rows.push(format!("| `{name}` | {} |", rest.trim()));
        } else if let Some(rest) = trimmed.strip_prefix("thrpt:")
            && let Some(last) = rows.last_mut()
        {
            last.push_str(&format!(" {} |", rest.trim()));
        }
    }
    let mut md = String::from(
        "\n## The desired-state computation alone\n\n\
         `DESIRED_STATE_BENCH_SIZES=SIZES cargo bench -p svc-controller --bench desired_state`, \
         run by `cargo xtask bench` on the host (criterion; no kernel, no I/O; the same \
         synthetic cluster). `compute_service`: one Service; `one_change/N`: what an incremental \
         sync computes when one endpoint of one Service flips in a node of N Services; \
         `whole_cluster/N`: the desired state of N Services from scratch (an adoption's \
         computation). Times are criterion's [low, estimate, high].\n\n\
         | benchmark | time | throughput |\n| --- | --- | --- |\n",
    );
    for row in rows {
        // Rows without a throughput get an empty cell.
        let cells = row.matches(" | ").count();
        md += &row;
        if cells < 2 {
            md += "  |";
        }
        md += "\n";
    }
    Ok(md)
}

/// Which benchmarks `cargo xtask bench` runs (env `IPVS_BENCH_ONLY`: `library` or `cluster`;
/// unset or empty: both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BenchSelection {
    Both,
    Library,
    Cluster,
}

impl BenchSelection {
    fn from_env() -> Result<Self> {
        Self::parse(&std::env::var("IPVS_BENCH_ONLY").unwrap_or_default())
    }

    fn parse(text: &str) -> Result<Self> {
        match text.trim() {
            "" => Ok(Self::Both),
            "library" => Ok(Self::Library),
            "cluster" => Ok(Self::Cluster),
            other => Err(format!(
                "IPVS_BENCH_ONLY={other}: expected `library` (ipvs_bulk_load) or `cluster` \
                 (controller_scale and the desired-state computation)"
            )),
        }
    }

    fn library(self) -> bool {
        self != Self::Cluster
    }

    fn cluster(self) -> bool {
        self != Self::Library
    }
}

/// The largest number in a comma-separated list of sizes (`_` allowed as a digit separator).
fn biggest_size(list: &str) -> usize {
    list.split(',')
        .filter_map(|s| s.trim().replace('_', "").parse::<usize>().ok())
        .max()
        .unwrap_or(0)
}

/// `cargo xtask bench`: the benchmarks that need the real kernel, built in release mode and run
/// where IPVS is. They print figures; they do not pass or fail on speed.
///
/// - `ipvs_bulk_load`: the library's bulk load and listing against `ipvsadm` and moby/ipvs
///   (`IPVS_BENCH_SERVICES`, default `10000`, a comma-separated list for several sizes,
///   `2000` for a quick run; `IPVS_BENCH_REPEATS`, default 3). The moby/ipvs peer is a Go
///   program built on first use and cached (see [`moby_peer`]);
/// - `controller_scale`: the release `ipvs-proxy` daemon on synthetic clusters
///   (`IPVS_BENCH_CLUSTER_SIZES`, default `1000,10000,50000`; `IPVS_BENCH_CHURN_SAMPLES`,
///   `IPVS_BENCH_BURST`, `IPVS_BENCH_STEADY_SECS`, `IPVS_BENCH_DAEMON_ARGS` tune it). It
///   writes `BENCHMARKS.md`, which is copied to the workspace root.
///
/// `IPVS_BENCH_ONLY=library` runs only the first (and builds no daemon), `IPVS_BENCH_ONLY=cluster`
/// only the second and the desired-state computation.
///
/// The VM's memory is raised to 6G for tables above 10,000 Services unless `IPVS_VM_MEMORY`
/// says otherwise: 50,000 Services hold about 61,000 virtual and 610,000 real servers in the
/// kernel, next to the daemon, the peers' tables being freed and the manifests on tmpfs.
pub(crate) fn run_benchmarks(choice: KernelChoice) -> Result<bool> {
    let selection = BenchSelection::from_env()?;
    let sizes = std::env::var("IPVS_BENCH_CLUSTER_SIZES")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "1000,10000,50000".into());
    let library_sizes = std::env::var("IPVS_BENCH_SERVICES").unwrap_or_default();
    let biggest = match selection {
        BenchSelection::Both => biggest_size(&sizes).max(biggest_size(&library_sizes)),
        BenchSelection::Library => biggest_size(&library_sizes),
        BenchSelection::Cluster => biggest_size(&sizes),
    };
    let memory = if biggest > 10_000 { "6G" } else { "2G" };
    if biggest > 10_000 && std::env::var_os("IPVS_VM_MEMORY").is_none() {
        println!("    tables above 10,000 Services: the VM gets 6G of memory (IPVS_VM_MEMORY)");
    }
    let moby_peer = if selection.library() {
        moby_peer::ensure_built()?
    } else {
        None
    };

    if selection.cluster() {
        step(
            "building the node daemon in release mode (cargo build --release -p ipvs-proxy --bin ipvs-proxy)",
        );
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--release",
                "-p",
                "ipvs-proxy",
                "--bin",
                "ipvs-proxy",
            ])
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err("building the node daemon failed".into());
        }
    }
    let daemon = target_dir()?.join("release").join("ipvs-proxy");

    // The guest sees the file system read-only except the folders it is given: the scale
    // benchmark writes its report into this one, which outlives the run.
    let out = target_dir()?
        .join("xtask")
        .join(format!("bench-{}", std::process::id()));
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let report = out.join("BENCHMARKS.md");
    let mut scale_args: Vec<String> = vec![
        "--bench".into(),
        "--sizes".into(),
        sizes.clone(),
        "--daemon".into(),
        daemon.display().to_string(),
        "--write".into(),
        report.display().to_string(),
    ];
    for (var, flag) in [
        ("IPVS_BENCH_CHURN_SAMPLES", "--samples"),
        ("IPVS_BENCH_BURST", "--burst"),
        ("IPVS_BENCH_STEADY_SECS", "--steady-secs"),
        ("IPVS_BENCH_DAEMON_ARGS", "--daemon-args"),
    ] {
        if let Ok(value) = std::env::var(var) {
            scale_args.extend([flag.to_string(), value]);
        }
    }

    step("building the real-kernel benchmarks (cargo bench -p integration --no-run)");
    let entries: Vec<Entry> = built_executables(&["bench", "-p", "integration", "--no-run"])?
        .into_iter()
        .filter_map(|Built { name, exe, cwd, .. }| {
            let args = if name.contains("ipvs_bulk_load") && selection.library() {
                let mut args = vec!["--bench".to_string()];
                if let Some(peer) = &moby_peer {
                    args.extend(["--moby-peer".to_string(), peer.display().to_string()]);
                }
                args
            } else if name.contains("controller_scale") && selection.cluster() {
                scale_args.clone()
            } else {
                return None;
            };
            Some(Entry {
                name,
                exe,
                cwd,
                kind: EntryKind::Program(args),
            })
        })
        .collect();
    if entries.is_empty() {
        return Err("no benchmark was built".into());
    }
    step("running the benchmarks where IPVS is");
    let place = choose_place(choice)?.ok_or("benchmarks cannot be skipped")?;
    let outcome = match place {
        Place::Host => run_plan(Place::Host, &entries, RunNeeds::default())?,
        Place::Vm => {
            // As run_plan does, with `out` writable in the guest so the report comes back.
            let kernel = provision::provision()?;
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let plan_path = out.join("plan.json");
            let results_path = out.join("results.json");
            plan::write_plan(&entries, &plan_path)?;
            let command = format!(
                "{} guest-run --plan {} --results {}",
                exe.display(),
                plan_path.display(),
                results_path.display()
            );
            let options = vm::GuestOptions {
                writable: vec![&out],
                memory,
                ..vm::GuestOptions::default()
            };
            let ok = vm::run_in_guest(&kernel, &command, &options)?;
            KernelOutcome::Ran {
                place: "in a QEMU VM".into(),
                results: Results::read(&results_path)?,
                ok,
            }
        }
    };
    println!("\nbenchmarks: {}", outcome.describe());
    if report.is_file() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .ok_or("no workspace root")?;
        let mut text =
            std::fs::read_to_string(&report).map_err(|e| format!("{}: {e}", report.display()))?;
        text += &desired_state_section(&sizes)?;
        let dest = root.join("BENCHMARKS.md");
        std::fs::write(&dest, text).map_err(|e| format!("{}: {e}", dest.display()))?;
        println!("report written to {}", dest.display());
    } else if selection.cluster() {
        println!("no report was written (the scale benchmark did not finish)");
    }
    keep_logs(&out)?;
    let _ = std::fs::remove_dir_all(&out);
    Ok(outcome.ok())
}

/// Moves the daemon logs the scale benchmark left in `out` to `target/xtask/bench-logs/`
/// (the last run's only), for a look at what a figure came from.
fn keep_logs(out: &Path) -> Result<()> {
    let logs: Vec<PathBuf> = std::fs::read_dir(out)
        .map_err(|e| format!("{}: {e}", out.display()))?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .collect();
    if logs.is_empty() {
        return Ok(());
    }
    let kept = target_dir()?.join("xtask").join("bench-logs");
    let _ = std::fs::remove_dir_all(&kept);
    std::fs::create_dir_all(&kept).map_err(|e| format!("{}: {e}", kept.display()))?;
    for log in logs {
        if let Some(name) = log.file_name() {
            std::fs::rename(&log, kept.join(name))
                .map_err(|e| format!("{}: {e}", log.display()))?;
        }
    }
    println!("the daemon's logs: {}", kept.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{BenchSelection, biggest_size};

    #[test]
    fn bench_selection_names_one_part_or_both() {
        assert_eq!(BenchSelection::parse(""), Ok(BenchSelection::Both));
        assert_eq!(
            BenchSelection::parse(" library\n"),
            Ok(BenchSelection::Library)
        );
        assert_eq!(
            BenchSelection::parse("cluster"),
            Ok(BenchSelection::Cluster)
        );
        assert!(BenchSelection::parse("libary").is_err());
        assert!(BenchSelection::Library.library() && !BenchSelection::Library.cluster());
        assert!(BenchSelection::Both.library() && BenchSelection::Both.cluster());
    }

    #[test]
    fn biggest_size_reads_lists_with_separators() {
        assert_eq!(biggest_size("10_000, 50000"), 50_000);
        assert_eq!(biggest_size(""), 0);
        assert_eq!(biggest_size("x,2000"), 2000);
    }
}
