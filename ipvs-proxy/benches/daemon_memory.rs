//! Where the daemon's memory goes, by part: the heap each part of the engine holds for a
//! synthetic cluster, measured with a counting allocator (no kernel needed).
//!
//! ```sh
//! DAEMON_MEMORY_SIZES=1000,10000 cargo bench -p ipvs-proxy --bench daemon_memory
//! ```
//!
//! For each size it writes the cluster's manifests (`integration::synthetic`, one JSON file per
//! Service, 10 endpoints each), loads them with the manifests source, and prints the live heap
//! after each step and the peak reached during it:
//!
//! - the loaded objects, all at once (one `Reset` of each kind, as `ManifestFolder::load`
//!   gives them);
//! - the engine's store of them (trimmed), measured alone;
//! - the desired state computed from the store, measured alone;
//! - a whole engine fed the first load in parts as the daemon feeds it
//!   (`ManifestFolder::load_in_parts`), then adopting a node with the in-memory dataplane,
//!   minus that dataplane's own
//!   simulated kernel table and journal (which a real daemon does not hold): the store, the
//!   desired state and the reconciler's view of the kernel, as the daemon holds them at
//!   steady state.
//!
//! These are live heap bytes (what the program holds), not RSS: the allocator's free lists and
//! fragmentation come on top (the scale benchmark in `integration` reports the daemon's RSS).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is the failure report

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use integration::synthetic::SyntheticCluster;
use ipvs_proxy::health::Health;
use ipvs_proxy::source::manifests::ManifestFolder;
use ipvs_proxy::telemetry::{Metrics, Telemetry};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use peak_alloc::PeakAlloc;
use svc_controller::dataplane::MemoryDataplane;
use svc_controller::runtime::Message;
use svc_controller::runtime::{Change, ObjectStore};
use svc_controller::runtime::{Engine, EngineConfig};
use svc_controller::{NodeInfo, ProxyConfig};

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

const MIB: f64 = 1024.0 * 1024.0;

/// Live heap and peak while running `f`, relative to the live heap before it.
fn measure<T>(f: impl FnOnce() -> T) -> (T, f64, f64) {
    HEAP.reset_peak_usage();
    let before = HEAP.current_usage();
    let value = f();
    let live = HEAP.current_usage().saturating_sub(before);
    let peak = HEAP.peak_usage().saturating_sub(before);
    (value, live as f64 / MIB, peak as f64 / MIB)
}

/// The Services and the EndpointSlices of a load's messages.
fn split(messages: Vec<Message>) -> (Change<Service>, Change<EndpointSlice>) {
    let mut services = Change::Reset(Vec::new());
    let mut slices = Change::Reset(Vec::new());
    for m in messages {
        match m {
            Message::Services(change) => services = change,
            Message::Slices(change) => slices = change,
            _ => {}
        }
    }
    (services, slices)
}

fn line(what: &str, live: f64, peak: f64) {
    println!("  {what:<58} live {live:>8.1} MiB   peak {peak:>8.1} MiB");
}

fn main() {
    let sizes: Vec<usize> = std::env::var("DAEMON_MEMORY_SIZES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let node_address = "192.168.1.10".parse().unwrap();
    println!(
        "inline sizes: Service {} B, EndpointSlice {} B, Endpoint {} B",
        std::mem::size_of::<Service>(),
        std::mem::size_of::<EndpointSlice>(),
        std::mem::size_of::<k8s_openapi::api::discovery::v1::Endpoint>()
    );
    for size in sizes {
        let dir = std::env::temp_dir().join(format!("daemon-memory-{}-{size}", std::process::id()));
        let cluster = SyntheticCluster::new(size, 10);
        cluster.write_all(&dir).expect("manifests written");
        println!("{size} Services × 10 endpoints:");

        let (messages, live, peak) = measure(|| ManifestFolder::new(&dir).load().messages);
        line("all objects at once (ManifestFolder::load)", live, peak);

        // Each store is built from a fresh load inside the measurement: the store keeps
        // (moves) much of what the messages allocated, which must count.
        let load = || split(ManifestFolder::new(&dir).load().messages);
        let (store, live, peak) = measure(|| {
            let mut store = ObjectStore::new();
            store.change_services(load().0);
            store
        });
        line("store: the Services alone", live, peak);
        drop(store);
        let (store, live, peak) = measure(|| {
            let mut store = ObjectStore::new();
            store.change_slices(load().1);
            store
        });
        line("store: the EndpointSlices alone", live, peak);
        drop(store);
        let (store, live, peak) = measure(|| {
            let (services, slices) = load();
            let mut store = ObjectStore::new();
            store.change_services(services);
            store.change_slices(slices);
            store
        });
        line("store: both", live, peak);

        let mut node = NodeInfo::new("node-a");
        node.addresses = vec![node_address];
        let (desired, live, peak) = measure(|| store.compute_all(&node, &ProxyConfig::default()));
        line("desired state", live, peak);
        drop((store, desired));

        // The daemon's way: the first load streamed into the engine in parts, as it is read
        // (the messages above are dropped first).
        drop(messages);
        let dataplane = MemoryDataplane::new().with_node_addresses([node_address]);
        let before_load = HEAP.current_usage();
        let (engine, _, peak) = measure(|| {
            let mut engine = Engine::new(
                dataplane,
                EngineConfig::for_node("node-a"),
                Arc::new(Telemetry::new(
                    Arc::new(Metrics::new(false)),
                    Arc::new(Health::new(Duration::from_secs(60))),
                )),
            );
            ManifestFolder::new(&dir).load_in_parts(|part| {
                for m in part.messages {
                    engine.handle(m, SystemTime::now());
                }
                true
            });
            let handled = HEAP.current_usage().saturating_sub(before_load) as f64 / MIB;
            let loading_peak = HEAP.peak_usage().saturating_sub(before_load) as f64 / MIB;
            line(
                "engine fed the first load in parts, before adoption",
                handled,
                loading_peak,
            );
            engine.step(Instant::now(), SystemTime::now());
            assert!(engine.is_adopted());
            engine
        });
        // The in-memory dataplane's own holdings: its table and its journal of operations
        // (freed by clearing it, as much as it frees).
        let mut engine = engine;
        let (table, table_size, _) = measure(|| engine.reconciler().dataplane().table());
        drop(table);
        let before_clear = HEAP.current_usage();
        engine.dataplane_mut().clear_logs();
        let journal_size = before_clear.saturating_sub(HEAP.current_usage()) as f64 / MIB;
        let kernel = table_size + journal_size;
        let live = HEAP.current_usage().saturating_sub(before_load) as f64 / MIB + journal_size;
        line(
            "engine after adoption (store + desired + view)",
            live - kernel,
            peak,
        );
        line(
            "  (the in-memory dataplane's table and journal, subtracted)",
            kernel,
            kernel,
        );
        let (view, size, _) = measure(|| engine.reconciler().view().clone());
        drop(view);
        line(
            "  of which the reconciler's view of the kernel (a copy)",
            size,
            size,
        );
        let (desired, size, _) = measure(|| engine.reconciler().desired().clone());
        drop(desired);
        line("  of which the desired state (a copy)", size, size);
        let (log, size, _) = measure(|| engine.reconciler().dataplane().address_log().to_vec());
        drop(log);
        line(
            "  (the in-memory dataplane's address log, not subtracted)",
            size,
            size,
        );
        let before_drop = HEAP.current_usage();
        drop(engine);
        let freed = before_drop.saturating_sub(HEAP.current_usage()) as f64 / MIB;
        line("  (freed by dropping the engine)", freed, freed);
        std::fs::remove_dir_all(&dir).ok();
    }
}
