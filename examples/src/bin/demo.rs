//! The demo: one IPVS virtual server spreading real TCP connections over two real servers.
//!
//! It builds a client, a director and two backends from network namespaces, programs IPVS in the
//! director with the `ipvs` library (round-robin, NAT), opens connections from the client to the
//! virtual IP, and prints which backend answered each — then reads the kernel's own counters back
//! through the library and checks that both accounts agree.
//!
//! Needs a kernel with IPVS and CAP_NET_ADMIN + CAP_SYS_ADMIN: run it with `cargo xtask demo`,
//! which uses a VM when the host kernel has no IPVS.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use examples::{expect, render_tally};
use integration::backend::tally;
use integration::topology::{LoadBalancerTopology, VIP};
use ipvs::Ipvs;
use ipvs::model::{Destination, Forwarding, Scheduler, Service, ServiceKey};

const CONNECTIONS: usize = 40;

fn main() -> ExitCode {
    match run() {
        Ok(()) => {
            println!("\nOK: IPVS spread the connections over both real servers.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\nFAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    println!("Building the network: client → director (IPVS) → 2 backends, one namespace each…");
    let net = LoadBalancerTopology::build(2)?;
    let vip = SocketAddr::new(VIP.into(), 80);
    let key = ServiceKey::tcp(VIP, 80);

    println!("Programming IPVS in the director: virtual server {vip}, round-robin, NAT…");
    net.director.run(|| -> ipvs::Result<()> {
        let mut ipvs = Ipvs::open()?;
        ipvs.add_service(&Service::new(key, Scheduler::RoundRobin))?;
        for backend in &net.backends {
            let real = backend.addr();
            ipvs.add_destination(
                &key,
                &Destination::new(real.ip(), real.port(), Forwarding::Masquerade),
            )?;
            println!("  real server {real} ({})", backend.name());
        }
        Ok(())
    })??;

    println!(
        "\nThe client opens {CONNECTIONS} TCP connections to {vip}; each backend answers its name:"
    );
    let counts = tally(&net.client, vip, CONNECTIONS)?;
    println!("{}", render_tally(&counts));

    println!("\nThe kernel's own account (read back through the library):");
    // IPVS folds its per-CPU counters into the totals it reports every two seconds, so poll
    // until they have caught up with what the client saw (or give up after a while).
    let (service, destinations) = net.director.run(|| -> ipvs::Result<_> {
        let mut ipvs = Ipvs::open()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let service = ipvs.service(&key)?;
            if service.stats.connections >= CONNECTIONS as u64 || Instant::now() > deadline {
                return Ok((service, ipvs.destinations(&key)?));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    })??;
    println!(
        "  {} scheduler {}: {} connections, {} packets in, {} packets out",
        service.service.key,
        service.service.scheduler,
        service.stats.connections,
        service.stats.packets_in,
        service.stats.packets_out
    );
    for d in &destinations {
        println!(
            "    -> {}:{} weight {} connections {}",
            d.destination.addr,
            d.destination.port,
            d.destination.weight.get(),
            d.stats.connections
        );
    }

    for backend in &net.backends {
        let seen = counts.get(backend.name()).copied().unwrap_or(0);
        expect(
            seen > 0,
            format!("{} got no connection: {counts:?}", backend.name()),
        )?;
        let kernel = destinations
            .iter()
            .find(|d| d.destination.addr == backend.addr().ip())
            .map(|d| d.stats.connections)
            .unwrap_or(0);
        expect(
            kernel == seen as u64,
            format!(
                "{}: the client saw {seen} connections, IPVS counted {kernel}",
                backend.name()
            ),
        )?;
    }
    let failed: usize = counts
        .iter()
        .filter(|(k, _)| k.starts_with("(failed"))
        .map(|(_, n)| n)
        .sum();
    expect(failed == 0, format!("{failed} connections failed"))?;
    let (a, b) = (
        counts.get("backend-1").copied().unwrap_or(0),
        counts.get("backend-2").copied().unwrap_or(0),
    );
    expect(
        a.abs_diff(b) <= 1,
        format!("round-robin should split evenly, got {a} and {b}"),
    )?;
    Ok(())
}
