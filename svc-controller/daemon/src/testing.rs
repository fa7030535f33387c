//! Builders shared by the unit tests.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use svc_controller::SERVICE_NAME_LABEL;

/// A ClusterIP Service with one TCP port 80.
pub(crate) fn service(ns: &str, name: &str, ip: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            resource_version: Some("7".into()),
            annotations: Some(BTreeMap::from([("unrelated".into(), "x".into())])),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(ip.into()),
            cluster_ips: Some(vec![ip.into()]),
            ports: Some(vec![ServicePort {
                port: 80,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// A slice of Service `svc` with ready endpoints at `addrs`, port 8080.
pub(crate) fn slice(ns: &str, name: &str, svc: &str, addrs: &[&str]) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(SERVICE_NAME_LABEL.into(), svc.into())])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some(
            addrs
                .iter()
                .map(|a| Endpoint {
                    addresses: vec![(*a).into()],
                    conditions: Some(EndpointConditions {
                        ready: Some(true),
                        ..Default::default()
                    }),
                    hostname: Some("pod".into()),
                    ..Default::default()
                })
                .collect(),
        ),
        ports: Some(vec![EndpointPort {
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    }
}
