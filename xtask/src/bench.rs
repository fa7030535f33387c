//! `cargo xtask bench`: the benchmarks that need the real kernel, built in release mode and run
//! where IPVS is. They print figures; they do not pass or fail on speed.
//!
//! - `ipvs_bulk_load` (part `library`): the library's bulk load and listing against `ipvsadm`
//!   and moby/ipvs (`IPVS_BENCH_SERVICES`, default `10000,50000`, a comma-separated list,
//!   `2000` for a quick run; `IPVS_BENCH_REPEATS`, default 3). The moby/ipvs peer is a
//!   Go program built on first use and cached (see [`moby_peer`]);
//! - `controller_scale` (part `cluster`): the release `ipvs-proxy` daemon on synthetic
//!   clusters read from manifests (`IPVS_BENCH_CLUSTER_SIZES`, default `1000,10000,50000`;
//!   `IPVS_BENCH_CHURN_SAMPLES`, `IPVS_BENCH_BURST`, `IPVS_BENCH_STEADY_SECS`,
//!   `IPVS_BENCH_DAEMON_ARGS` tune it), then the desired-state computation on the host;
//! - `kubernetes_scale` (part `kubernetes`): ipvs-proxy, the release's kube-proxy
//!   (`--proxy-mode=ipvs`) and kube-router's service proxy (built from its Go module on first
//!   use and cached, see [`kube_router`]) on the real control plane loaded with the same
//!   synthetic clusters
//!   (`IPVS_BENCH_KUBERNETES_SIZES`, default `1000,10000`: under emulation kube-proxy's first
//!   sync of 1,000 Services takes minutes and grows with the table, so at `10000` its cold start
//!   is capped, below; `IPVS_BENCH_KUBERNETES_SAMPLES`, `IPVS_BENCH_REFERENCE_SAMPLES` and
//!   `IPVS_BENCH_KUBE_ROUTER_SAMPLES`: changes one at a time for ipvs-proxy, kube-proxy and
//!   kube-router (default 50, 10, 2: each costs kube-router a sync of the whole table, minutes
//!   at 1,000 Services under emulation); `IPVS_BENCH_BURST`,
//!   `IPVS_BENCH_STEADY_SECS`; `IPVS_BENCH_PROXIES=kube-proxy,kube-router` picks proxies;
//!   `IPVS_BENCH_COLD_CAP_SECS`, default 600: a proxy whose cold start takes longer is
//!   reported as not complete by then, with nothing else measured at that size;
//!   `IPVS_BENCH_PROFILE_SECS`, default 60, the length of kube-proxy's CPU profile at the end
//!   of each size, 0 for none). The control plane is built and started as for the
//!   control-plane tests.
//!
//! `IPVS_BENCH_ONLY` names the parts to run (`library`, `cluster`, `kubernetes`, comma-separated;
//! unset: all). `BENCHMARKS.md` is written from what ran: the parts that did not run keep their
//! sections from the file as it was.
//!
//! The VM's memory is raised to 6G for tables above 10,000 Services unless `IPVS_VM_MEMORY`
//! says otherwise: 50,000 Services hold about 61,000 virtual and 610,000 real servers in the
//! kernel, next to the daemon, the peers' tables being freed and the manifests on tmpfs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::kernel::{
    Built, KernelOutcome, Place, RunNeeds, built_executables, choose_place, run_plan, target_dir,
};
use crate::plan::{Entry, EntryKind};
use crate::{KernelChoice, Result, control_plane, kube_router, moby_peer, step};

/// Which parts `cargo xtask bench` runs (env `IPVS_BENCH_ONLY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parts {
    library: bool,
    cluster: bool,
    kubernetes: bool,
}

impl Parts {
    const ALL: Parts = Parts {
        library: true,
        cluster: true,
        kubernetes: true,
    };

    fn from_env() -> Result<Self> {
        Self::parse(&std::env::var("IPVS_BENCH_ONLY").unwrap_or_default())
    }

    fn parse(text: &str) -> Result<Self> {
        if text.trim().is_empty() {
            return Ok(Self::ALL);
        }
        let mut parts = Parts {
            library: false,
            cluster: false,
            kubernetes: false,
        };
        for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "library" => parts.library = true,
                "cluster" => parts.cluster = true,
                "kubernetes" => parts.kubernetes = true,
                other => {
                    return Err(format!(
                        "IPVS_BENCH_ONLY: unknown part {other:?}: expected `library` \
                         (ipvs_bulk_load), `cluster` (controller_scale and the desired-state \
                         computation) or `kubernetes` (kubernetes_scale), comma-separated"
                    ));
                }
            }
        }
        Ok(parts)
    }

    /// Whether a part needs the daemon in release mode.
    fn daemon(self) -> bool {
        self.cluster || self.kubernetes
    }
}

/// The largest number in a comma-separated list of sizes (`_` allowed as a digit separator).
fn biggest_size(list: &str) -> usize {
    list.split(',')
        .filter_map(|s| s.trim().replace('_', "").parse::<usize>().ok())
        .max()
        .unwrap_or(0)
}

/// A size list from the environment, or its default.
fn sizes_from_env(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| default.into())
}

/// Arguments from the environment: each set variable of `vars` as its flag and value.
fn flags_from_env(vars: &[(&str, &str)]) -> Vec<String> {
    let mut args = Vec::new();
    for (var, flag) in vars {
        if let Ok(value) = std::env::var(var) {
            args.extend([flag.to_string(), value]);
        }
    }
    args
}

fn build_release_daemon() -> Result<PathBuf> {
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
    Ok(target_dir()?.join("release").join("ipvs-proxy"))
}

/// `cargo xtask bench` (see the module's documentation).
pub(crate) fn run_benchmarks(choice: KernelChoice) -> Result<bool> {
    let parts = Parts::from_env()?;
    let sizes = sizes_from_env("IPVS_BENCH_CLUSTER_SIZES", "1000,10000,50000");
    let kubernetes_sizes = sizes_from_env("IPVS_BENCH_KUBERNETES_SIZES", "1000,10000");
    let library_sizes =
        std::env::var("IPVS_BENCH_SERVICES").unwrap_or_else(|_| "10000,50000".into());
    let biggest = [
        (parts.library, biggest_size(&library_sizes)),
        (parts.cluster, biggest_size(&sizes)),
        (parts.kubernetes, biggest_size(&kubernetes_sizes)),
    ]
    .into_iter()
    .filter_map(|(on, size)| on.then_some(size))
    .max()
    .unwrap_or(0);
    let memory = if biggest > 10_000 { "6G" } else { "2G" };
    if biggest > 10_000 && std::env::var_os("IPVS_VM_MEMORY").is_none() {
        println!("    tables above 10,000 Services: the VM gets 6G of memory (IPVS_VM_MEMORY)");
    }
    // The files the figures go into are checked before hours of benchmarks, not after.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("no workspace root")?;
    let dest = root.join("BENCHMARKS.md");
    let readme = root.join("ipvs-rs").join("README.md");
    report_sections(&dest)?;
    if parts.library {
        between_markers(&read(&readme)?, LIBRARY_BEGIN, LIBRARY_END, "")
            .map_err(|e| format!("{}: {e}", readme.display()))?;
    }
    let moby_peer = if parts.library {
        moby_peer::ensure_built()?
    } else {
        None
    };
    let control_plane_binaries = if parts.kubernetes {
        Some(control_plane::ensure_built()?)
    } else {
        None
    };
    let kube_router = if parts.kubernetes {
        kube_router::ensure_built()?
    } else {
        None
    };
    let daemon = if parts.daemon() {
        build_release_daemon()?
    } else {
        PathBuf::new()
    };

    // The guest sees the file system read-only except the folders it is given: the benchmarks
    // write their reports and logs into this one, which outlives the run.
    let out = target_dir()?
        .join("xtask")
        .join(format!("bench-{}", std::process::id()));
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let cluster_report = out.join("cluster.md");
    let library_report = out.join("library.md");
    let kubernetes_report = out.join("kubernetes.md");
    let mut scale_args: Vec<String> = vec![
        "--bench".into(),
        "--sizes".into(),
        sizes.clone(),
        "--daemon".into(),
        daemon.display().to_string(),
        "--write".into(),
        cluster_report.display().to_string(),
    ];
    scale_args.extend(flags_from_env(&[
        ("IPVS_BENCH_CHURN_SAMPLES", "--samples"),
        ("IPVS_BENCH_BURST", "--burst"),
        ("IPVS_BENCH_STEADY_SECS", "--steady-secs"),
        ("IPVS_BENCH_DAEMON_ARGS", "--daemon-args"),
    ]));
    let mut kubernetes_args: Vec<String> = vec![
        "--bench".into(),
        "--profile-secs".into(),
        "60".into(),
        "--sizes".into(),
        kubernetes_sizes,
        "--daemon".into(),
        daemon.display().to_string(),
        "--write".into(),
        kubernetes_report.display().to_string(),
        "--logs".into(),
        out.display().to_string(),
    ];
    if let Some(kube_router) = &kube_router {
        kubernetes_args.extend(["--kube-router".into(), kube_router.display().to_string()]);
    }
    kubernetes_args.extend(flags_from_env(&[
        ("IPVS_BENCH_KUBERNETES_SAMPLES", "--samples"),
        ("IPVS_BENCH_REFERENCE_SAMPLES", "--reference-samples"),
        ("IPVS_BENCH_KUBE_ROUTER_SAMPLES", "--kube-router-samples"),
        ("IPVS_BENCH_PROXIES", "--proxies"),
        ("IPVS_BENCH_PROFILE_SECS", "--profile-secs"),
        ("IPVS_BENCH_COLD_CAP_SECS", "--cold-cap-secs"),
        ("IPVS_BENCH_BURST", "--burst"),
        ("IPVS_BENCH_STEADY_SECS", "--steady-secs"),
    ]));

    step("building the real-kernel benchmarks (cargo bench -p integration --no-run)");
    let entries: Vec<Entry> = built_executables(&["bench", "-p", "integration", "--no-run"])?
        .into_iter()
        .filter_map(|Built { name, exe, cwd, .. }| {
            let args = if name.contains("ipvs_bulk_load") && parts.library {
                let mut args = vec![
                    "--bench".to_string(),
                    "--write".to_string(),
                    library_report.display().to_string(),
                ];
                if let Some(peer) = &moby_peer {
                    args.extend(["--moby-peer".to_string(), peer.display().to_string()]);
                }
                args
            } else if name.contains("controller_scale") && parts.cluster {
                scale_args.clone()
            } else if name.contains("kubernetes_scale") && parts.kubernetes {
                kubernetes_args.clone()
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
    let plane = match &control_plane_binaries {
        Some(binaries) => {
            // QEMU's user-mode network shows the host's loopback to the guest at 10.0.2.2.
            let dial_host = match place {
                Place::Host => "127.0.0.1",
                Place::Vm => "10.0.2.2",
            };
            Some(control_plane::ControlPlane::start(
                binaries,
                &target_dir()?.join("xtask"),
                dial_host,
            )?)
        }
        None => None,
    };
    // `out` is writable in the guest, so that the reports come back.
    let needs = RunNeeds {
        network: plane.is_some(),
        env: plane
            .iter()
            .map(|p| ("IPVS_CONTROL_PLANE", p.info.display().to_string()))
            .collect(),
        writable: vec![out.clone()],
        memory,
        // Every part at its default sizes, kube-proxy's capped cold start and the 50,000-service
        // tables included, runs for hours under emulation.
        timeout: Some(std::time::Duration::from_secs(5 * 3600)),
    };
    let outcome = run_plan(place, &entries, needs);
    if let Some(plane) = plane {
        if !outcome.as_ref().is_ok_and(KernelOutcome::ok) {
            plane.print_logs();
        }
        plane.stop();
    }
    let outcome = outcome?;
    println!("\nbenchmarks: {}", outcome.describe());

    let mut sections = report_sections(&dest)?;
    let mut wrote = false;
    if parts.cluster {
        if cluster_report.is_file() {
            sections.cluster = read(&cluster_report)?;
            sections.desired_state = desired_state_section(&sizes)?;
            wrote = true;
        } else {
            println!("no cluster report was written (controller_scale did not finish)");
        }
    }
    if parts.library {
        if library_report.is_file() {
            let text = read(&library_report)?;
            sections.library = format!("{LIBRARY_HEADING}\n\n{}", text.trim());
            let doc = between_markers(&read(&readme)?, LIBRARY_BEGIN, LIBRARY_END, &text)
                .map_err(|e| format!("{}: {e}", readme.display()))?;
            std::fs::write(&readme, doc).map_err(|e| format!("{}: {e}", readme.display()))?;
            println!("library figures written to {}", readme.display());
            wrote = true;
        } else {
            println!("no library report was written (ipvs_bulk_load did not finish)");
        }
    }
    if parts.kubernetes {
        if kubernetes_report.is_file() {
            sections.kubernetes = read(&kubernetes_report)?;
            if let Some(binaries) = &control_plane_binaries {
                sections.kubernetes += &profiles_section(&out, &binaries.kube_proxy())?;
            }
            wrote = true;
        } else {
            println!("no Kubernetes-mode report was written (kubernetes_scale did not finish)");
        }
    }
    if wrote {
        std::fs::write(&dest, sections.render()).map_err(|e| format!("{}: {e}", dest.display()))?;
        println!("report written to {}", dest.display());
    }
    keep_logs(&out)?;
    let _ = std::fs::remove_dir_all(&out);
    Ok(outcome.ok())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// kube-proxy's CPU profiles that `kubernetes_scale` left in `out` (`kube-proxy-N-WHAT.pprof`), each
/// summarized by `go tool pprof -top` as a part of the Kubernetes-mode section.
fn profiles_section(out: &Path, kube_proxy: &Path) -> Result<String> {
    let mut profiles: Vec<PathBuf> = std::fs::read_dir(out)
        .map_err(|e| format!("{}: {e}", out.display()))?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "pprof"))
        .collect();
    profiles.sort();
    let Some(go) = crate::go_build::go_command() else {
        return Ok(String::new());
    };
    let mut md = String::new();
    for profile in profiles {
        let output = Command::new(&go)
            .args(["tool", "pprof", "-top", "-nodecount=15"])
            .arg(kube_proxy)
            .arg(&profile)
            .stderr(Stdio::null())
            .output()
            .map_err(|e| format!("go tool pprof: {e}"))?;
        if !output.status.success() {
            continue;
        }
        let name = profile
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        // kube-proxy-SIZE-WHAT: a profile of its periodic syncs (`steady`) or of the cold
        // start's sync it was still in when the cap came (`cold`).
        let mut parts = name.rsplit('-');
        let what = parts.next().unwrap_or("?");
        let size = parts.next().unwrap_or("?");
        let (title, when) = match what {
            "cold" => (
                format!("in its first sync, {size} Services"),
                "of the first sync, still under way when the cold start's cap came",
            ),
            _ => (
                format!("{size} Services"),
                "of its periodic syncs with no change, taken after the figures above",
            ),
        };
        md += &format!(
            "\n### Where kube-proxy's time goes, {title}\n\nA CPU profile {when} (`--profiling`, \
             `/debug/pprof/profile`), summarized by `go tool pprof -top -nodecount=15`:\n\n```text\n{}```\n",
            String::from_utf8_lossy(&output.stdout)
        );
    }
    Ok(md)
}

/// Where the library's figures begin and end in `BENCHMARKS.md` and in `ipvs-rs/README.md`.
const LIBRARY_BEGIN: &str = "<!-- ipvs_bulk_load: begin -->\n";
const LIBRARY_END: &str = "<!-- ipvs_bulk_load: end -->\n";
/// The heading of the library's section in `BENCHMARKS.md`.
const LIBRARY_HEADING: &str = "## The library: bulk load and listing against ipvsadm and moby/ipvs";

/// `doc` split at a marked section: what comes before `begin`, what lies between the markers
/// and what comes after `end`; `Ok(None)` when neither marker is there. One marker without the
/// other is an error: guessing where the section ends would overwrite what follows it.
fn split_marked<'a>(
    doc: &'a str,
    begin: &str,
    end: &str,
) -> Result<Option<(&'a str, &'a str, &'a str)>> {
    let Some(at) = doc.find(begin) else {
        return match doc.find(end) {
            Some(_) => Err(format!(
                "{:?} without {:?} before it",
                end.trim(),
                begin.trim()
            )),
            None => Ok(None),
        };
    };
    let body = &doc[at + begin.len()..];
    match body.find(end) {
        Some(stop) => Ok(Some((&doc[..at], &body[..stop], &body[stop + end.len()..]))),
        None => Err(format!(
            "{:?} without {:?} after it",
            begin.trim(),
            end.trim()
        )),
    }
}

/// `doc` with what lies between `begin` and `end` replaced by `body`.
fn between_markers(doc: &str, begin: &str, end: &str, body: &str) -> Result<String> {
    let (before, _, after) = split_marked(doc, begin, end)?
        .ok_or_else(|| format!("no {:?} … {:?}", begin.trim(), end.trim()))?;
    Ok(format!("{before}{begin}{}\n{end}{after}", body.trim()))
}

/// `body`, trimmed, between `begin` and `end`, at the end of `doc` (nothing when it is empty).
fn push_marked(doc: &mut String, begin: &str, end: &str, body: &str) {
    if !body.trim().is_empty() {
        *doc += begin;
        *doc += body.trim();
        *doc += "\n";
        *doc += end;
        *doc += "\n";
    }
}

/// Where the Kubernetes-mode section begins and ends in `BENCHMARKS.md`.
const KUBERNETES_BEGIN: &str = "<!-- kubernetes_scale: begin -->\n";
const KUBERNETES_END: &str = "<!-- kubernetes_scale: end -->\n";
/// The heading that begins the desired-state section.
const DESIRED_STATE_HEADING: &str = "## The desired-state computation alone";

/// `BENCHMARKS.md` in its three parts, each written by one benchmark: the manifests series
/// (with the file's title), the Kubernetes-mode series, the desired-state computation.
#[derive(Debug, Default, PartialEq, Eq)]
struct Sections {
    cluster: String,
    kubernetes: String,
    library: String,
    desired_state: String,
}

impl Sections {
    /// The file's sections; an error when a section's markers are not in pairs.
    fn parse(doc: &str) -> Result<Self> {
        // The library's section, wherever it stands, is taken out first.
        let rest;
        let (doc, library) = match split_marked(doc, LIBRARY_BEGIN, LIBRARY_END)? {
            Some((before, body, after)) => {
                rest = format!("{before}{after}");
                (rest.as_str(), body.trim().to_owned())
            }
            None => (doc, String::new()),
        };
        let (head, desired_state) = match doc.find(DESIRED_STATE_HEADING) {
            Some(at) => (&doc[..at], &doc[at..]),
            None => (doc, ""),
        };
        let (cluster, kubernetes) = split_marked(head, KUBERNETES_BEGIN, KUBERNETES_END)?
            .map_or((head, ""), |(before, body, _)| (before, body));
        Ok(Self {
            cluster: cluster.trim_end().to_owned(),
            kubernetes: kubernetes.trim().to_owned(),
            library,
            desired_state: desired_state.trim().to_owned(),
        })
    }

    fn render(&self) -> String {
        let mut doc = self.cluster.trim_end().to_owned();
        doc += "\n\n";
        push_marked(&mut doc, KUBERNETES_BEGIN, KUBERNETES_END, &self.kubernetes);
        push_marked(&mut doc, LIBRARY_BEGIN, LIBRARY_END, &self.library);
        if !self.desired_state.trim().is_empty() {
            doc += self.desired_state.trim();
            doc += "\n";
        }
        doc
    }
}

/// The sections of the report at `path` (none when there is no such file).
fn report_sections(path: &Path) -> Result<Sections> {
    let doc = match std::fs::read_to_string(path) {
        Ok(doc) => doc,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    Sections::parse(&doc).map_err(|e| format!("{}: {e}", path.display()))
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
    let rows = criterion_rows(&stdout);
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

/// The rows of criterion's output: each benchmark's name, then `time: [low estimate high]`
/// (on the same line when the name is short) and `thrpt:` when a throughput is set. The
/// comparison with a previous run (`change:`, percentages) is left out.
fn criterion_rows(stdout: &str) -> Vec<String> {
    let mut rows: Vec<String> = Vec::new();
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
        if trimmed.contains('%') {
            continue;
        }
        if let Some(rest) = trimmed.split("time:").nth(1) {
            rows.push(format!("| `{name}` | {} |", rest.trim()));
        } else if let Some(rest) = trimmed.strip_prefix("thrpt:")
            && let Some(last) = rows.last_mut()
        {
            last.push_str(&format!(" {} |", rest.trim()));
        }
    }
    rows
}

/// Moves the daemon logs the scale benchmark left in `out` to `target/xtask/bench-logs/`
/// (the last run's only), for a look at what a figure came from.
fn keep_logs(out: &Path) -> Result<()> {
    let logs: Vec<PathBuf> = std::fs::read_dir(out)
        .map_err(|e| format!("{}: {e}", out.display()))?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "log" || ext == "pprof")
        })
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
    use super::{Parts, Sections, biggest_size};

    #[test]
    fn parts_name_one_or_several() {
        assert_eq!(Parts::parse(""), Ok(Parts::ALL));
        let library = Parts::parse(" library\n").unwrap();
        assert!(library.library && !library.cluster && !library.kubernetes && !library.daemon());
        let two = Parts::parse("cluster,kubernetes").unwrap();
        assert!(!two.library && two.cluster && two.kubernetes && two.daemon());
        assert!(Parts::parse("kubernetes").unwrap().daemon());
        assert!(Parts::parse("libary").is_err());
    }

    #[test]
    fn biggest_size_reads_lists_with_separators() {
        assert_eq!(biggest_size("10_000, 50000"), 50_000);
        assert_eq!(biggest_size(""), 0);
        assert_eq!(biggest_size("x,2000"), 2000);
    }

    #[test]
    fn criterion_rows_leave_out_the_comparison_with_a_previous_run() {
        let out = "one_change/1000         time:   [3.1413 µs 3.1489 µs 3.1565 µs]
                        thrpt:  [316.80 Kelem/s 317.57 Kelem/s 318.34 Kelem/s]
                 change:
                        time:   [−0.2434% +0.4569% +1.0337%] (p = 0.17 > 0.05)
                        thrpt:  [−1.0232% −0.4549% +0.2440%]
                        No change in performance detected.
compute_service/ClusterIP
                        time:   [1.4561 µs 1.4594 µs 1.4625 µs]
";
        assert_eq!(
            super::criterion_rows(out),
            [
                "| `one_change/1000` | [3.1413 µs 3.1489 µs 3.1565 µs] | [316.80 Kelem/s 317.57 \
                 Kelem/s 318.34 Kelem/s] |",
                "| `compute_service/ClusterIP` | [1.4561 µs 1.4594 µs 1.4625 µs] |",
            ]
        );
    }

    #[test]
    fn a_part_that_did_not_run_keeps_its_section() {
        // A file from before the Kubernetes-mode series: the manifests part and the
        // desired-state section.
        let old = "# Benchmarks\n\n## Results\n\n| a |\n\n## The desired-state computation alone\n\n| b |\n";
        let mut sections = Sections::parse(old).expect("sections");
        assert_eq!(sections.cluster, "# Benchmarks\n\n## Results\n\n| a |");
        assert_eq!(sections.kubernetes, "");
        assert!(sections.desired_state.starts_with("## The desired-state"));
        assert_eq!(sections.render(), old);

        // The Kubernetes part ran alone: it lands between the two, which stay as they were.
        sections.kubernetes = "## Kubernetes mode\n\n| k |\n".into();
        let doc = sections.render();
        assert!(doc.starts_with("# Benchmarks\n\n## Results\n\n| a |\n\n<!-- kubernetes_scale: begin -->\n## Kubernetes mode"));
        assert!(doc.ends_with("| k |\n<!-- kubernetes_scale: end -->\n\n## The desired-state computation alone\n\n| b |\n"));
        assert_eq!(Sections::parse(&doc).expect("sections").render(), doc);

        // Then the manifests part alone: the Kubernetes section stays.
        let mut again = Sections::parse(&doc).expect("sections");
        again.cluster = "# Benchmarks\n\n## Results\n\n| a2 |\n".into();
        let doc = again.render();
        assert!(doc.contains("| a2 |") && doc.contains("| k |") && doc.contains("| b |"));
        assert!(!doc.contains("| a |"));

        // The library's part: between the Kubernetes section and the desired state, kept by
        // a run of another part.
        again.library = "## The library\n\n| l |".into();
        let doc = again.render();
        assert!(doc.contains(
            "<!-- kubernetes_scale: end -->\n\n<!-- ipvs_bulk_load: begin -->\n## The library\n\n| l |\n<!-- ipvs_bulk_load: end -->\n\n## The desired-state"
        ));
        let mut parsed = Sections::parse(&doc).expect("sections");
        assert_eq!(parsed.library, "## The library\n\n| l |");
        assert_eq!(parsed.render(), doc);
        parsed.kubernetes = "## Kubernetes mode\n\n| k2 |".into();
        assert!(parsed.render().contains("| l |") && parsed.render().contains("| k2 |"));
    }

    #[test]
    fn figures_replace_what_lies_between_their_markers_only() {
        let doc = "# ipvs-rs\n\n## Performance\n\n<!-- ipvs_bulk_load: begin -->\nold\n<!-- ipvs_bulk_load: end -->\n\nWhere the time goes.\n";
        let new =
            super::between_markers(doc, super::LIBRARY_BEGIN, super::LIBRARY_END, "| new |\n")
                .expect("markers");
        assert_eq!(
            new,
            "# ipvs-rs\n\n## Performance\n\n<!-- ipvs_bulk_load: begin -->\n| new |\n<!-- ipvs_bulk_load: end -->\n\nWhere the time goes.\n"
        );
        assert!(
            super::between_markers("no markers", super::LIBRARY_BEGIN, super::LIBRARY_END, "x")
                .is_err()
        );
    }

    #[test]
    fn a_marker_without_its_pair_is_an_error_not_a_section_to_the_end_of_the_file() {
        let unended = "# B\n\n<!-- kubernetes_scale: begin -->\n## K\n\n## The desired-state computation alone\n";
        let err = Sections::parse(unended).expect_err("a begin marker without its end");
        assert!(err.contains("kubernetes_scale: end"), "{err}");
        let unbegun = "# B\n\n<!-- ipvs_bulk_load: end -->\n";
        assert!(Sections::parse(unbegun).is_err());
        let readme = "# ipvs-rs\n\n<!-- ipvs_bulk_load: begin -->\nold\n\nThe rest.\n";
        assert!(
            super::between_markers(readme, super::LIBRARY_BEGIN, super::LIBRARY_END, "new")
                .is_err()
        );
        assert_eq!(
            Sections::parse("").expect("an empty file"),
            Sections::default()
        );
    }
}
