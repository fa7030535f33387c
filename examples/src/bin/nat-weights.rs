//! Example 1 — a NAT load balancer with weights.
//!
//! One virtual server, three real servers with weights 1, 1 and 2 under weighted round-robin
//! (`wrr`): a client opens connections one after another and the program counts which backend
//! answered each — the split follows the weights. Then one weight is changed with an *edit* (the
//! destination is not deleted and re-added, so established connections are untouched) and the
//! new split is shown.
//!
//! Run it where IPVS is: `cargo xtask kernel-tests` runs every example; on a host with IPVS,
//! `cargo run -p examples --bin nat-weights` as root.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;

use examples::{expect, render_tally};
use integration::backend::tally;
use integration::topology::{LoadBalancerTopology, VIP};
use ipvs::Ipvs;
use ipvs::model::{Destination, Forwarding, Scheduler, Service, ServiceKey, Weight};

fn main() -> ExitCode {
    match run() {
        Ok(()) => {
            println!("\nOK: the connections followed the weights, before and after the edit.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\nFAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Checks that `counts` splits `total` connections in proportion to `weights` (±1 each).
fn check_split(
    counts: &BTreeMap<String, usize>,
    weights: &[u32],
) -> Result<(), examples::Unexpected> {
    let total: usize = counts.values().sum();
    let sum: u32 = weights.iter().sum();
    for (i, w) in weights.iter().enumerate() {
        let name = format!("backend-{}", i + 1);
        let want = total * *w as usize / sum as usize;
        let got = counts.get(&name).copied().unwrap_or(0);
        expect(
            got.abs_diff(want) <= 1,
            format!("{name}: expected about {want} of {total}, got {got}"),
        )?;
    }
    Ok(())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    println!("Building the network: client → director → 3 backends, one namespace each…");
    let net = LoadBalancerTopology::build(3)?;
    let vip = SocketAddr::new(VIP.into(), 80);
    let key = ServiceKey::tcp(VIP, 80);
    let weights = [1, 1, 2];
    let destination = |i: usize, weight: u32| -> Result<Destination, ipvs::model::ModelError> {
        let real = net.backends[i].addr();
        let mut d = Destination::new(real.ip(), real.port(), Forwarding::Masquerade);
        d.weight = Weight::new(weight)?;
        Ok(d)
    };

    println!("Virtual server {vip}: wrr, real servers with weights {weights:?}.");
    net.director
        .run(|| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            let mut ipvs = Ipvs::open()?;
            ipvs.add_service(&Service::new(key, Scheduler::WeightedRoundRobin))?;
            for (i, w) in weights.iter().enumerate() {
                ipvs.add_destination(&key, &destination(i, *w)?)?;
            }
            Ok(())
        })?
        .map_err(|e| e.to_string())?;

    println!("\n80 connections:");
    let counts = tally(&net.client, vip, 80)?;
    println!("{}", render_tally(&counts));
    check_split(&counts, &weights)?;

    println!("\nEditing backend-3's weight from 2 to 1 (one SET_DEST, no delete)…");
    net.director
        .run(|| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            Ipvs::open()?.edit_destination(&key, &destination(2, 1)?)?;
            Ok(())
        })?
        .map_err(|e| e.to_string())?;

    println!("\n60 more connections:");
    let counts = tally(&net.client, vip, 60)?;
    println!("{}", render_tally(&counts));
    check_split(&counts, &[1, 1, 1])?;
    Ok(())
}
