//! Port resolution: `spec.ports[]` (`port`, `protocol`, `targetPort`, `nodePort`) and the
//! EndpointSlice port each one maps to.
//!
//! # How the endpoint port is found
//! The EndpointSlice API names each slice port after the *Service port* it serves
//! (`EndpointSlice.ports[].name == Service.spec.ports[].name`, both empty for an unnamed port),
//! and its number is the already resolved target port. So, per slice and per Service port:
//! 1. the slice port with the Service port's name and protocol is used; its number is the real
//!    server port;
//! 2. otherwise, when `targetPort` is a name, a slice port with *that* name and protocol is used
//!    (hand-written slices for selector-less Services often name ports after the container
//!    port);
//! 3. a matched slice port without a number ("not restricted" in the API) takes the Service's
//!    numeric `targetPort` (or `port` when `targetPort` is unset);
//! 4. anything else is a [`Problem`] for that slice and port, and that slice contributes no
//!    real server to that port. A slice without endpoints is never reported.
//!
//! Resolution is done per slice: one slice's pods may expose a named port under a different
//! number than another's, exactly as the EndpointSlice controller groups them.

use std::ops::RangeInclusive;

use k8s_openapi::api::core::v1::ServicePort;
use k8s_openapi::api::discovery::v1::EndpointPort;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use ipvs::model::Protocol;

use super::spelling;
use crate::model::ServiceRef;
use crate::problem::Problem;

use super::validate;

/// What `targetPort` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TargetPort {
    /// Unset: the same as `port`.
    Same,
    /// A number.
    Number(u16),
    /// A port name.
    Name(String),
}

/// One validated entry of `spec.ports`.
#[derive(Debug, Clone)]
pub(crate) struct ServicePortSpec {
    /// The index in `spec.ports`, for messages.
    pub(crate) index: usize,
    /// `name`, empty when unnamed.
    pub(crate) name: String,
    /// `protocol`, TCP when unset.
    pub(crate) protocol: Protocol,
    /// `port`.
    pub(crate) port: u16,
    /// `nodePort`, when the Service type uses it and it is set, non-zero and inside the
    /// NodePort range.
    pub(crate) node_port: Option<u16>,
    /// `targetPort`.
    pub(crate) target: TargetPort,
}

/// Validates `spec.ports`; a port with a bad `port`, `protocol` or `targetPort` is reported and
/// skipped. `nodePort` is read only when `node_ports` (the Service type uses it); one outside
/// `node_port_range` is reported and the port gets no NodePort, the rest of it is kept (see
/// [`validate`]).
pub(crate) fn service_ports(
    service: &ServiceRef,
    ports: &[ServicePort],
    node_ports: bool,
    node_port_range: &RangeInclusive<u16>,
    problems: &mut Vec<Problem>,
) -> Vec<ServicePortSpec> {
    let mut out = Vec::with_capacity(ports.len());
    for (index, sp) in ports.iter().enumerate() {
        let range = node_ports.then_some(node_port_range);
        if let Some(spec) = service_port(service, index, sp, range, problems) {
            out.push(spec);
        }
    }
    out
}

fn service_port(
    service: &ServiceRef,
    index: usize,
    sp: &ServicePort,
    node_port_range: Option<&RangeInclusive<u16>>,
    problems: &mut Vec<Problem>,
) -> Option<ServicePortSpec> {
    let bad_port = |field: &str, value: i64| Problem::InvalidPort {
        service: service.clone(),
        field: format!("spec.ports[{index}].{field}"),
        value,
    };
    let protocol = match sp.protocol.as_deref() {
        None => Protocol::Tcp,
        Some(p) => match spelling::protocol(p) {
            Some(p) => p,
            None => {
                problems.push(Problem::InvalidValue {
                    service: service.clone(),
                    field: format!("spec.ports[{index}].protocol"),
                    value: p.to_owned(),
                    expected: "TCP, UDP or SCTP",
                    action: "port skipped",
                });
                return None;
            }
        },
    };
    let Some(port) = port_number(i64::from(sp.port)) else {
        problems.push(bad_port("port", i64::from(sp.port)));
        return None;
    };
    let target = match &sp.target_port {
        None => TargetPort::Same,
        Some(IntOrString::Int(n)) => match port_number(i64::from(*n)) {
            Some(n) => TargetPort::Number(n),
            None => {
                problems.push(bad_port("targetPort", i64::from(*n)));
                return None;
            }
        },
        Some(IntOrString::String(name)) if name.is_empty() => TargetPort::Same,
        Some(IntOrString::String(name)) => TargetPort::Name(name.clone()),
    };
    // Read last: a refused nodePort gives up only the NodePort virtual servers.
    let node_port = match (sp.node_port, node_port_range) {
        (None | Some(0), _) | (_, None) => None,
        (Some(n), Some(range)) => validate::node_port(
            service,
            || format!("spec.ports[{index}].nodePort"),
            n,
            range,
            "no NodePort for this port",
            problems,
        ),
    };
    Some(ServicePortSpec {
        index,
        name: sp.name.clone().unwrap_or_default(),
        protocol,
        port,
        node_port,
        target,
    })
}

/// A port number in 1–65535.
pub(crate) fn port_number(value: i64) -> Option<u16> {
    u16::try_from(value).ok().filter(|p| *p != 0)
}

/// Finds the real-server port for `spec` in one slice (see the module docs). `None` after a
/// problem was pushed.
pub(crate) fn resolve_in_slice(
    service: &ServiceRef,
    spec: &ServicePortSpec,
    slice_name: &str,
    slice_ports: &[EndpointPort],
    problems: &mut Vec<Problem>,
) -> Option<u16> {
    let find = |name: &str| {
        slice_ports.iter().enumerate().find(|(_, p)| {
            p.name.as_deref().unwrap_or("") == name
                && p.protocol
                    .as_deref()
                    .map_or(Some(Protocol::Tcp), spelling::protocol)
                    == Some(spec.protocol)
        })
    };
    let found = find(&spec.name).or_else(|| match &spec.target {
        TargetPort::Name(target) => find(target),
        _ => None,
    });
    let Some((i, entry)) = found else {
        problems.push(match &spec.target {
            TargetPort::Name(target) => Problem::UnresolvedTargetPort {
                service: service.clone(),
                index: spec.index,
                target: target.clone(),
                slice: slice_name.to_owned(),
            },
            _ => Problem::MissingSlicePort {
                service: service.clone(),
                index: spec.index,
                port_name: spec.name.clone(),
                protocol: spec.protocol,
                slice: slice_name.to_owned(),
            },
        });
        return None;
    };
    match entry.port {
        Some(n) => {
            let port = port_number(i64::from(n));
            if port.is_none() {
                problems.push(Problem::InvalidEndpointPort {
                    service: service.clone(),
                    slice: slice_name.to_owned(),
                    field: format!("ports[{i}].port"),
                    value: n,
                });
            }
            port
        }
        None => match &spec.target {
            TargetPort::Same => Some(spec.port),
            TargetPort::Number(n) => Some(*n),
            TargetPort::Name(target) => {
                problems.push(Problem::UnresolvedTargetPort {
                    service: service.clone(),
                    index: spec.index,
                    target: target.clone(),
                    slice: slice_name.to_owned(),
                });
                None
            }
        },
    }
}
