//! Table-driven tests: every `tests/fixtures/desired/*.yaml` document holds the input (Services,
//! EndpointSlices, node, config) and the expected virtual servers, VIPs, problems, health checks
//! and counts of Service ports without local endpoints.
//!
//! Virtual servers are written in their `Display` form
//! (`TCP 10.96.0.10:53 rr -> 10.244.1.5:5353 w1, ...`), problems as their messages. Order does
//! not matter. Every fixture is also computed with its objects listed in reverse and with its
//! objects trimmed as a runtime keeps them ([`svc_controller::desired::reads`]): neither may
//! change the result. Every mismatch of every fixture is reported, with the fixture's name,
//! before the test fails.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;
use svc_controller::desired::reads::{trim_service, trim_slice};
use svc_controller::{DesiredState, NodeInfo, ProxyConfig};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    /// What the fixture shows (documentation only).
    #[allow(dead_code)]
    description: String,
    /// The node; defaults to `node-a` in `zone-a` with address 192.168.1.10.
    #[serde(default = "default_node")]
    node: NodeInfo,
    #[serde(default)]
    config: ProxyConfig,
    #[serde(default)]
    services: Vec<Service>,
    #[serde(default)]
    slices: Vec<EndpointSlice>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    #[serde(default)]
    virtual_servers: Vec<String>,
    #[serde(default)]
    vips: Vec<String>,
    #[serde(default)]
    problems: Vec<String>,
    /// As `namespace/name PORT: N local endpoints`.
    #[serde(default)]
    health_checks: Vec<String>,
    /// Service ports with a `Local` policy and no local endpoint
    /// ([`svc_controller::NoLocalEndpoints`]), as `[internal, external]`; `[0, 0]` when absent.
    #[serde(default)]
    no_local_endpoints: [u32; 2],
}

fn default_node() -> NodeInfo {
    NodeInfo {
        name: "node-a".into(),
        zone: Some("zone-a".into()),
        addresses: vec!["192.168.1.10".parse().expect("literal address")],
    }
}

fn fixture_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/desired");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("fixture directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// Compares two lists as multisets; reports what is missing and what is unexpected.
fn compare(report: &mut String, what: &str, expected: &[String], actual: &[String]) {
    let mut expected: Vec<&str> = expected.iter().map(|s| s.trim()).collect();
    let mut actual: Vec<&str> = actual.iter().map(String::as_str).collect();
    expected.sort_unstable();
    actual.sort_unstable();
    if expected == actual {
        return;
    }
    for e in &expected {
        if !actual.contains(e) {
            let _ = writeln!(report, "    {what} missing:    {e}");
        }
    }
    for a in &actual {
        if !expected.contains(a) {
            let _ = writeln!(report, "    {what} unexpected: {a}");
        }
    }
    if expected.len() != actual.len() {
        let _ = writeln!(
            report,
            "    {what}: expected {} entries, got {}",
            expected.len(),
            actual.len()
        );
    }
}

type Summary = (Vec<String>, Vec<String>, Vec<String>, Vec<String>);

fn summary(state: &DesiredState) -> Summary {
    (
        state
            .virtual_servers()
            .values()
            .map(ToString::to_string)
            .collect(),
        state.vips().iter().map(ToString::to_string).collect(),
        state.problems().iter().map(ToString::to_string).collect(),
        state
            .health_checks()
            .map(|(service, check)| {
                format!(
                    "{service} {}: {} local endpoints",
                    check.node_port, check.local_endpoints
                )
            })
            .collect(),
    )
}

#[test]
fn desired_state_fixtures() {
    let files = fixture_files();
    assert!(
        files.len() >= 30,
        "expected at least 30 fixtures, found {}",
        files.len()
    );
    let mut failures = String::new();
    for path in &files {
        let name = path
            .file_name()
            .expect("fixture file name")
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(path).expect("fixture readable");
        let fixture: Fixture = match serde_yaml_ng::from_str(&text) {
            Ok(f) => f,
            Err(e) => {
                let _ = writeln!(failures, "{name}: does not parse: {e}");
                continue;
            }
        };
        let state = DesiredState::compute(
            &fixture.services,
            &fixture.slices,
            &fixture.node,
            &fixture.config,
        );
        let (vs, vips, problems, health_checks) = summary(&state);
        let mut report = String::new();
        compare(
            &mut report,
            "virtual server",
            &fixture.expect.virtual_servers,
            &vs,
        );
        compare(&mut report, "vip", &fixture.expect.vips, &vips);
        compare(&mut report, "problem", &fixture.expect.problems, &problems);
        compare(
            &mut report,
            "health check",
            &fixture.expect.health_checks,
            &health_checks,
        );
        let no_local = state.no_local_endpoints();
        let no_local = [no_local.internal, no_local.external];
        if no_local != fixture.expect.no_local_endpoints {
            let _ = writeln!(
                report,
                "    no_local_endpoints: expected {:?}, got {no_local:?}",
                fixture.expect.no_local_endpoints
            );
        }

        // The result must not depend on the order objects are listed in.
        let mut services = fixture.services.clone();
        let mut slices = fixture.slices.clone();
        services.reverse();
        slices.reverse();
        let reversed = DesiredState::compute(&services, &slices, &fixture.node, &fixture.config);
        let summarised = (
            vs.clone(),
            vips.clone(),
            problems.clone(),
            health_checks.clone(),
        );
        if summary(&reversed) != summarised {
            let _ = writeln!(
                report,
                "    result changes when Services and slices are listed in reverse order"
            );
        }

        // A program keeps objects trimmed to what the computation reads: trimming must keep
        // every field this fixture's result depends on.
        let services: Vec<_> = fixture.services.iter().cloned().map(trim_service).collect();
        let slices: Vec<_> = fixture.slices.iter().cloned().map(trim_slice).collect();
        let trimmed = DesiredState::compute(&services, &slices, &fixture.node, &fixture.config);
        if summary(&trimmed) != summarised {
            let _ = writeln!(
                report,
                "    result changes when the objects are trimmed (desired::reads drops a field \
                 the computation reads): {:?}",
                summary(&trimmed)
            );
        }

        if !report.is_empty() {
            let _ = writeln!(failures, "{name}:\n{report}  actual:");
            for line in vs
                .iter()
                .map(|v| format!("      vs: {v}"))
                .chain(vips.iter().map(|v| format!("      vip: {v}")))
                .chain(problems.iter().map(|p| format!("      problem: {p}")))
                .chain(
                    health_checks
                        .iter()
                        .map(|h| format!("      health check: {h}")),
                )
            {
                let _ = writeln!(failures, "{line}");
            }
        }
    }
    assert!(failures.is_empty(), "fixture mismatches:\n{failures}");
}
