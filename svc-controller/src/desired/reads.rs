//! What the computation reads of a Service and an EndpointSlice, as the rules that trim an
//! object down to it.
//!
//! A program that keeps thousands of objects (the runtime's store) keeps them trimmed: an
//! update that changes nothing read here (a status condition, a managed-fields entry, an
//! unrelated annotation) then compares equal and costs no work. The rules live beside the
//! computation so that a field it starts to read is kept in the same change; the fixture
//! tests compute every fixture from trimmed objects too, and fail if a read field is dropped.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::config::{
    SCHEDULER_ANNOTATION, SERVICE_NAME_LABEL, SERVICE_PROXY_NAME_LABEL, TRIGGER_TIME_ANNOTATION,
};

#[cfg(doc)]
use crate::desired::compute_service;

/// Keeps only the metadata the computation reads.
fn trim_meta(meta: ObjectMeta, keep_labels: &[&str], keep_annotations: &[&str]) -> ObjectMeta {
    let pick = |map: Option<BTreeMap<String, String>>, keep: &[&str]| {
        let picked: BTreeMap<String, String> = map
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| keep.contains(&k.as_str()))
            .collect();
        (!picked.is_empty()).then_some(picked)
    };
    ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        labels: pick(meta.labels, keep_labels),
        annotations: pick(meta.annotations, keep_annotations),
        ..ObjectMeta::default()
    }
}

/// A Service reduced to what [`compute_service`] reads: name, namespace, the proxy-name label,
/// the scheduler annotation, the spec and the load balancer status.
pub fn trim_service(service: Service) -> Service {
    let status = service.status.and_then(|s| s.load_balancer).map(|lb| {
        k8s_openapi::api::core::v1::ServiceStatus {
            load_balancer: Some(lb),
            conditions: None,
        }
    });
    Service {
        metadata: trim_meta(
            service.metadata,
            &[SERVICE_PROXY_NAME_LABEL],
            &[SCHEDULER_ANNOTATION],
        ),
        spec: service.spec.map(shrink_spec),
        status,
    }
}

/// A Service's spec with its lists' spare capacity given back: a parser growing a list
/// one item at a time leaves room for four (a one-port Service kept 400 bytes of it).
fn shrink_spec(
    mut spec: k8s_openapi::api::core::v1::ServiceSpec,
) -> k8s_openapi::api::core::v1::ServiceSpec {
    fn shrink<T>(list: &mut Option<Vec<T>>) {
        if let Some(list) = list {
            list.shrink_to_fit();
        }
    }
    shrink(&mut spec.ports);
    shrink(&mut spec.cluster_ips);
    shrink(&mut spec.external_ips);
    shrink(&mut spec.ip_families);
    shrink(&mut spec.load_balancer_source_ranges);
    spec
}

/// An EndpointSlice reduced to what [`compute_service`] reads: name, namespace, the
/// service-name label, address type, ports, and each endpoint's addresses, conditions, node,
/// zone and hints (no target reference, hostname or deprecated topology), and the
/// [`TRIGGER_TIME_ANNOTATION`], which the computation does not read but a runtime measures
/// its programming latency from.
pub fn trim_slice(slice: EndpointSlice) -> EndpointSlice {
    let endpoints = slice.endpoints.map(|endpoints| {
        let mut endpoints = endpoints
            .into_iter()
            .map(|e| k8s_openapi::api::discovery::v1::Endpoint {
                addresses: e.addresses,
                conditions: e.conditions,
                node_name: e.node_name,
                zone: e.zone,
                hints: e.hints,
                ..Default::default()
            })
            .collect::<Vec<_>>();
        // Collected in place: without this it keeps the parser's spare capacity.
        endpoints.shrink_to_fit();
        endpoints
    });
    EndpointSlice {
        metadata: trim_meta(
            slice.metadata,
            &[SERVICE_NAME_LABEL],
            &[TRIGGER_TIME_ANNOTATION],
        ),
        address_type: slice.address_type,
        endpoints,
        ports: slice.ports,
    }
}
