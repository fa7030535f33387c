//! `DesiredState::update` and `remove`: what they report as changed, and conflict takeover.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use svc_controller::{DesiredState, NodeInfo, ProxyConfig, ServiceRef, compute_service};

fn service(yaml: &str) -> Service {
    serde_yaml_ng::from_str(yaml).expect("test Service parses")
}

fn slice(yaml: &str) -> EndpointSlice {
    serde_yaml_ng::from_str(yaml).expect("test EndpointSlice parses")
}

fn lines(state: &DesiredState) -> Vec<String> {
    state
        .virtual_servers()
        .values()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn endpoint_change_touches_only_that_service() {
    let node = NodeInfo::new("node-a");
    let config = ProxyConfig::default();
    let a = service(
        "{metadata: {namespace: d, name: a}, spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}}",
    );
    let b = service(
        "{metadata: {namespace: d, name: b}, spec: {clusterIP: 10.96.0.2, ports: [{port: 80}, {port: 81, name: x}]}}",
    );
    let mut state = DesiredState::new();
    let first = state.update(compute_service(&a, &[], &node, &config));
    assert_eq!(first.virtual_servers.len(), 1);
    assert_eq!(first.vips.len(), 1);
    state.update(compute_service(&b, &[], &node, &config));

    let s = slice(
        "{metadata: {namespace: d, name: a-1, labels: {kubernetes.io/service-name: a}}, \
         addressType: IPv4, ports: [{port: 8080}], endpoints: [{addresses: [10.244.0.5]}]}",
    );
    let changes = state.update(compute_service(&a, &[&s], &node, &config));
    let keys: Vec<String> = changes
        .virtual_servers
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(keys, ["TCP 10.96.0.1:80"]);
    assert!(changes.vips.is_empty(), "the VIP stayed bound: {changes:?}");
    assert_eq!(
        lines(&state),
        [
            "TCP 10.96.0.1:80 rr -> 10.244.0.5:8080 w1",
            "TCP 10.96.0.2:80 rr -> (none)",
            "TCP 10.96.0.2:81 rr -> (none)",
        ]
    );

    // The same input again changes nothing.
    assert!(
        state
            .update(compute_service(&a, &[&s], &node, &config))
            .is_empty()
    );

    // Removing b removes its two virtual servers and its VIP.
    let removed = state.remove(&ServiceRef::new("d", "b"));
    assert_eq!(removed.virtual_servers.len(), 2);
    assert_eq!(
        removed
            .vips
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["10.96.0.2"]
    );
    assert!(!state.has_vip(&"10.96.0.2".parse().expect("address")));
    assert_eq!(lines(&state), ["TCP 10.96.0.1:80 rr -> 10.244.0.5:8080 w1"]);
}

#[test]
fn conflict_loser_takes_over_when_owner_goes() {
    let node = NodeInfo::new("node-a");
    let config = ProxyConfig::default();
    let alpha = service(
        "{metadata: {namespace: d, name: alpha}, spec: {clusterIP: 10.96.0.1, externalIPs: [198.51.100.7], ports: [{port: 80}]}}",
    );
    let zeta = service(
        "{metadata: {namespace: d, name: zeta}, spec: {clusterIP: 10.96.0.2, externalIPs: [198.51.100.7], ports: [{port: 80}], sessionAffinity: ClientIP}}",
    );
    let mut state = DesiredState::new();
    // The loser arrives first and owns the virtual server until alpha shows up.
    state.update(compute_service(&zeta, &[], &node, &config));
    let taken = state.update(compute_service(&alpha, &[], &node, &config));
    assert!(
        taken
            .virtual_servers
            .iter()
            .any(|k| k.to_string() == "TCP 198.51.100.7:80")
    );
    assert!(
        taken.vips.iter().all(|v| v.to_string() != "198.51.100.7"),
        "VIP stays bound"
    );
    let problems: Vec<String> = state.problems().iter().map(ToString::to_string).collect();
    assert_eq!(
        problems,
        [
            "d/zeta: TCP 198.51.100.7:80 is also claimed by d/alpha, which wins; not programmed for this Service"
        ]
    );
    assert!(lines(&state).contains(&"TCP 198.51.100.7:80 rr -> (none)".to_owned()));

    // When alpha goes, zeta's copy (with persistence) takes over; the VIP stays bound.
    let gone = state.remove(&ServiceRef::new("d", "alpha"));
    assert!(
        gone.virtual_servers
            .iter()
            .any(|k| k.to_string() == "TCP 198.51.100.7:80")
    );
    assert!(state.has_vip(&"198.51.100.7".parse().expect("address")));
    assert!(
        lines(&state).contains(&"TCP 198.51.100.7:80 rr persistent 10800 -> (none)".to_owned())
    );
    assert!(state.problems().is_empty());
}
