//! `deploy/` applied to the real API server: every object passes the server's own validation
//! (strict: an unknown or misspelt field fails), and the ServiceAccount it binds may do what
//! the daemon does and nothing else.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams, ValidationDirective};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use serde::Deserialize;

use super::harness::{Kube, deploy_dir, serial};

/// Every document of every file in `deploy/`, with its file name.
fn documents() -> Vec<(String, DynamicObject)> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = serde_yaml_ng::Value::deserialize(document).unwrap();
            if value.is_null() {
                continue;
            }
            let object: DynamicObject = serde_yaml_ng::from_value(value)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((
                path.file_name().unwrap().to_string_lossy().into_owned(),
                object,
            ));
        }
    }
    out
}

fn allowed(kube: &Kube, user: &str, verb: &str, group: &str, resource: &str) -> bool {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.into()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = kube.cluster_api();
    let answer = kube
        .run(api.create(&PostParams::default(), &review))
        .unwrap();
    answer.status.is_some_and(|s| s.allowed)
}

#[test]
#[ignore = "needs a real control plane: cargo xtask control-plane-tests"]
fn deploy_applies_to_the_real_api_server_and_grants_only_what_the_daemon_uses() {
    let _one = serial();
    let kube = Kube::connect();
    let documents = documents();
    assert!(documents.len() >= 5, "deploy/ read: {}", documents.len());
    let params = PatchParams {
        field_manager: Some("control-plane-tests".into()),
        field_validation: Some(ValidationDirective::Strict),
        force: true,
        ..Default::default()
    };
    for (file, object) in &documents {
        let types = object.types.clone().expect("apiVersion and kind");
        let gvk = GroupVersionKind::try_from(&types).unwrap();
        let (resource, caps) = kube
            .run(discovery::pinned_kind(&kube.admin, &gvk))
            .unwrap_or_else(|e| panic!("{file}: {gvk:?} unknown to the API server: {e}"));
        let name = object.metadata.name.clone().expect("a name");
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => Api::namespaced_with(
                kube.admin.clone(),
                object.metadata.namespace.as_deref().unwrap_or("default"),
                &resource,
            ),
            Scope::Cluster => Api::all_with(kube.admin.clone(), &resource),
        };
        kube.run(api.patch(&name, &params, &Patch::Apply(object)))
            .unwrap_or_else(|e| panic!("{file}: {} {name} refused: {e}", types.kind));
    }

    let account = "system:serviceaccount:kube-system:ipvs-proxy";
    for (group, resource) in [
        ("", "services"),
        ("", "nodes"),
        ("discovery.k8s.io", "endpointslices"),
    ] {
        for verb in ["list", "watch"] {
            assert!(
                allowed(&kube, account, verb, group, resource),
                "{account} may {verb} {resource}"
            );
        }
    }
    for (verb, group, resource) in [
        ("get", "", "secrets"),
        ("create", "", "services"),
        ("update", "discovery.k8s.io", "endpointslices"),
        ("list", "", "pods"),
        ("patch", "", "nodes"),
    ] {
        assert!(
            !allowed(&kube, account, verb, group, resource),
            "{account} may not {verb} {resource}"
        );
    }
}
