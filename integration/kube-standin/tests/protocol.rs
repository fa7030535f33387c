//! The stand-in as the real `kube` client sees it.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::{Api, ResourceExt};
use kube_standin::{DownMode, ExpiredStyle, StandIn, Verb};

const WAIT: Duration = Duration::from_secs(20);

fn service(name: &str, labels: &[(&str, &str)]) -> Service {
    let mut s = Service::default();
    s.metadata.name = Some(name.into());
    s.metadata.namespace = Some("ns".into());
    s.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    );
    s
}

async fn next_event(
    stream: &mut (impl futures_util::Stream<Item = kube::Result<WatchEvent<Service>>> + Unpin),
) -> WatchEvent<Service> {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("an event in time")
        .expect("the stream goes on")
        .expect("a good event")
}

fn describe(event: &WatchEvent<Service>) -> String {
    match event {
        WatchEvent::Added(s) => format!("ADDED {}", s.name_any()),
        WatchEvent::Modified(s) => format!("MODIFIED {}", s.name_any()),
        WatchEvent::Deleted(s) => format!("DELETED {}", s.name_any()),
        WatchEvent::Bookmark(b) => format!("BOOKMARK {}", b.metadata.resource_version),
        WatchEvent::Error(e) => format!("ERROR {} {}", e.code, e.reason),
    }
}

#[tokio::test]
async fn lists_in_pages_with_selectors() {
    let server = StandIn::start().await.expect("starts");
    for name in ["a", "b", "c", "d"] {
        server
            .apply(&service(name, &[("app", "web")]))
            .expect("apply");
    }
    server
        .apply(&service("hidden", &[("app", "web"), ("skip", "")]))
        .expect("apply");
    let api: Api<Service> = Api::all(server.client().expect("client"));

    let first = api
        .list(&ListParams::default().labels("app=web,!skip").limit(3))
        .await
        .expect("first page");
    assert_eq!(first.items.len(), 3);
    let token = first.metadata.continue_.clone().expect("a continue token");
    let rv = first.metadata.resource_version.clone();
    // A write between pages does not show in the second page (a consistent snapshot).
    server
        .apply(&service("e", &[("app", "web")]))
        .expect("apply");
    let second = api
        .list(
            &ListParams::default()
                .labels("app=web,!skip")
                .limit(3)
                .continue_token(&token),
        )
        .await
        .expect("second page");
    let names: Vec<_> = first
        .items
        .iter()
        .chain(&second.items)
        .map(ResourceExt::name_any)
        .collect();
    assert_eq!(names, ["a", "b", "c", "d"]);
    assert_eq!(second.metadata.resource_version, rv);
    assert_eq!(second.metadata.continue_, None);

    let ns_api: Api<Service> = Api::namespaced(server.client().expect("client"), "other");
    assert!(
        ns_api
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty()
    );
    let by_name = api
        .list(&ListParams::default().fields("metadata.name=hidden"))
        .await
        .expect("list");
    assert_eq!(by_name.items.len(), 1);

    let log = server.requests();
    let list = log.iter().find(|r| r.verb == Verb::List).expect("a list");
    assert_eq!(
        list.param("labelSelector").as_deref(),
        Some("app=web,!skip")
    );
    assert_eq!(list.param("limit").as_deref(), Some("3"));
}

#[tokio::test]
async fn watches_follow_selectors_and_bookmarks() {
    let server = StandIn::builder()
        .bookmark_interval(None)
        .start()
        .await
        .expect("starts");
    let api: Api<Service> = Api::all(server.client().expect("client"));
    let rv = server.resource_version().to_string();
    let mut stream = api
        .watch(&WatchParams::default().labels("!hidden"), &rv)
        .await
        .expect("watch")
        .boxed();
    server.apply(&service("a", &[])).expect("apply");
    assert_eq!(describe(&next_event(&mut stream).await), "ADDED a");
    server
        .apply(&service("a", &[("hidden", "yes")]))
        .expect("apply");
    // Stopped matching: DELETED, with the event's version.
    let event = next_event(&mut stream).await;
    assert_eq!(describe(&event), "DELETED a");
    if let WatchEvent::Deleted(s) = &event {
        assert_eq!(
            s.resource_version(),
            Some(server.resource_version().to_string())
        );
    }
    server.apply(&service("a", &[])).expect("apply");
    assert_eq!(describe(&next_event(&mut stream).await), "ADDED a");
    server.apply(&service("a", &[("x", "y")])).expect("apply");
    assert_eq!(describe(&next_event(&mut stream).await), "MODIFIED a");
    server.send_bookmarks();
    let now = server.resource_version();
    assert_eq!(
        describe(&next_event(&mut stream).await),
        format!("BOOKMARK {now}")
    );
    server
        .delete_named("v1", "Service", Some("ns"), "a")
        .expect("delete");
    assert_eq!(describe(&next_event(&mut stream).await), "DELETED a");
    assert_eq!(server.bookmarks_sent(), 1);
    assert_eq!(server.open_watches(), 1);
    drop(stream);
    assert!(kube_standin::wait_until(WAIT, || server.open_watches() == 0).await);
}

#[tokio::test]
async fn expired_versions_get_410_both_ways() {
    let server = StandIn::start().await.expect("starts");
    server.apply(&service("a", &[])).expect("apply");
    let old = server.resource_version().to_string();
    server.apply(&service("b", &[])).expect("apply");
    server.compact();
    let api: Api<Service> = Api::all(server.client().expect("client"));

    let mut stream = api
        .watch(&WatchParams::default(), &old)
        .await
        .expect("watch")
        .boxed();
    match next_event(&mut stream).await {
        WatchEvent::Error(status) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
            assert!(status.message.contains("too old resource version"));
        }
        other => panic!("expected a 410 ERROR event, got {}", describe(&other)),
    }
    assert!(
        tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("ends")
            .is_none()
    );

    server.set_expired_style(ExpiredStyle::HttpGone);
    match api.watch(&WatchParams::default(), &old).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 410),
        Err(other) => panic!("expected HTTP 410, got {other}"),
        Ok(_) => panic!("expected HTTP 410, got a stream"),
    }
    // From the current version the watch works.
    let now = server.resource_version().to_string();
    let mut stream = api
        .watch(&WatchParams::default(), &now)
        .await
        .expect("watch")
        .boxed();
    server.apply(&service("c", &[])).expect("apply");
    assert_eq!(describe(&next_event(&mut stream).await), "ADDED c");

    // Told to, the server refuses every watch from a version, even the current one, while the
    // watch already open carries on; a watch from "" (no version) is not refused.
    server.expire_every_watch(true);
    let now = server.resource_version().to_string();
    match api.watch(&WatchParams::default(), &now).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 410),
        Err(other) => panic!("expected HTTP 410, got {other}"),
        Ok(_) => panic!("expected HTTP 410, got a stream"),
    }
    server.apply(&service("d", &[])).expect("apply");
    assert_eq!(describe(&next_event(&mut stream).await), "ADDED d");
    let mut fresh = api
        .watch(&WatchParams::default(), "")
        .await
        .expect("a watch from no version")
        .boxed();
    assert_eq!(describe(&next_event(&mut fresh).await), "ADDED a");
    server.expire_every_watch(false);
    let now = server.resource_version().to_string();
    let mut again = api
        .watch(&WatchParams::default(), &now)
        .await
        .expect("a watch from the current version again")
        .boxed();
    server.apply(&service("e", &[])).expect("apply");
    assert_eq!(describe(&next_event(&mut again).await), "ADDED e");
    // The log says when each request arrived, in order.
    let log = server.requests();
    assert!(log.windows(2).all(|w| w[0].at <= w[1].at));
}

#[tokio::test]
async fn faults_cut_watches_and_refuse_requests() {
    let server = StandIn::builder()
        .bookmark_interval(None)
        .start()
        .await
        .expect("starts");
    let node = {
        let mut n = Node::default();
        n.metadata.name = Some("n1".into());
        n
    };
    server.apply(&node).expect("apply");
    let api: Api<Node> = Api::all(server.client().expect("client"));
    let rv = server.resource_version().to_string();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch")
        .boxed();
    assert!(kube_standin::wait_until(WAIT, || server.open_watches() == 1).await);
    server.drop_watches();
    // The cut stream ends (the client treats the truncated body as a resumable end).
    let end = tokio::time::timeout(WAIT, stream.try_next())
        .await
        .expect("in time");
    assert!(!matches!(end, Ok(Some(_))), "no event after the cut");
    assert!(kube_standin::wait_until(WAIT, || server.open_watches() == 0).await);

    server.go_down(DownMode::Status(500)).await.expect("down");
    match api.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 500),
        other => panic!("expected a 500, got {other:?}"),
    }
    server.come_up().await.expect("up");
    server.go_down(DownMode::Refuse).await.expect("down");
    let refused = api.list(&ListParams::default()).await;
    assert!(refused.is_err(), "connections are refused while down");
    server.come_up().await.expect("up");
    let listed = api.list(&ListParams::default()).await.expect("up again");
    assert_eq!(listed.items.len(), 1);
    let got = api.get("n1").await.expect("get");
    assert_eq!(got.name_any(), "n1");
    assert!(got.metadata.uid.is_some() && got.metadata.creation_timestamp.is_some());
}
