//! `ipvsadm -Ln` in Rust: render the IPVS table, with statistics and rates, as text or JSON.
//!
//! The text follows `ipvsadm -Ln` (and `--stats`, `--rate`), so people can read it the way they
//! read ipvsadm; the JSON carries every field the kernel reports, for programs.

use std::fmt::Write as _;
use std::net::IpAddr;

use ipvs::model::{DestinationEntry, Forwarding, Info, ServiceEntry, ServiceKey, Stats, Tunnel};
use serde_json::{Value, json};

/// A service with its destinations, as listed.
pub type Listing = Vec<(ServiceEntry, Vec<DestinationEntry>)>;

/// Which columns the text shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Columns {
    /// Forwarding, weight, active and inactive connections (`ipvsadm -Ln`).
    #[default]
    Connections,
    /// Counters (`ipvsadm -Ln --stats`).
    Stats,
    /// Rates (`ipvsadm -Ln --rate`).
    Rates,
}

/// Reads the whole table through `ipvs`.
pub fn read(ipvs: &mut ipvs::Ipvs) -> ipvs::Result<(Info, Listing)> {
    let info = ipvs.info()?;
    let mut listing = Vec::new();
    for service in ipvs.services()? {
        let destinations = ipvs.destinations(&service.service.key)?;
        listing.push((service, destinations));
    }
    Ok((info, listing))
}

fn address(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

fn service_column(key: &ServiceKey) -> String {
    match key {
        ServiceKey::Tuple {
            protocol,
            addr,
            port,
        } => {
            format!("{:<4} {}", protocol.to_string(), address(*addr, *port))
        }
        ServiceKey::Fwmark { mark, .. } => format!("{:<4} {mark}", "FWM"),
    }
}

/// ipvsadm's name for a forwarding method.
pub fn forwarding_name(forwarding: &Forwarding) -> &'static str {
    match forwarding {
        Forwarding::Masquerade => "Masq",
        Forwarding::Local => "Local",
        Forwarding::DirectRouting => "Route",
        Forwarding::Tunnel(_) => "Tunnel",
        Forwarding::Bypass => "Bypass",
    }
}

fn flags(entry: &ServiceEntry) -> String {
    let s = &entry.service;
    let mut out = Vec::new();
    if let Some(p) = &s.persistence {
        out.push(format!("persistent {}", p.timeout_secs));
    }
    if s.one_packet {
        out.push("ops".to_string());
    }
    if let Some(pe) = &s.persistence_engine {
        out.push(format!("pe {pe}"));
    }
    out.join(" ")
}

/// Renders the table like `ipvsadm -Ln`.
pub fn render_text(info: &Info, listing: &Listing, columns: Columns) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "IP Virtual Server version {} (size={})",
        info.version, info.connection_table_size
    );
    let stats_header = |first: &str| match columns {
        Columns::Stats => format!(
            "{first:<33} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
        ),
        _ => format!(
            "{first:<33} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"
        ),
    };
    match columns {
        Columns::Connections => {
            let _ = writeln!(out, "Prot LocalAddress:Port Scheduler Flags");
            let _ = writeln!(
                out,
                "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"
            );
        }
        _ => {
            let _ = writeln!(out, "{}", stats_header("Prot LocalAddress:Port"));
            let _ = writeln!(out, "  -> RemoteAddress:Port");
        }
    }
    let numbers = |s: &Stats| match columns {
        Columns::Stats => format!(
            "{:>8} {:>8} {:>8} {:>8} {:>8}",
            s.connections, s.packets_in, s.packets_out, s.bytes_in, s.bytes_out
        ),
        _ => format!(
            "{:>8} {:>8} {:>8} {:>8} {:>8}",
            s.rates.cps, s.rates.in_pps, s.rates.out_pps, s.rates.in_bps, s.rates.out_bps
        ),
    };
    for (service, destinations) in listing {
        let head = service_column(&service.service.key);
        match columns {
            Columns::Connections => {
                let line = format!("{head} {} {}", service.service.scheduler, flags(service));
                let _ = writeln!(out, "{}", line.trim_end());
            }
            _ => {
                let _ = writeln!(out, "{head:<33} {}", numbers(&service.stats));
            }
        }
        for d in destinations {
            let real = format!("  -> {}", address(d.destination.addr, d.destination.port));
            match columns {
                Columns::Connections => {
                    let _ = writeln!(
                        out,
                        "{real:<33} {:<7} {:<6} {:<10} {}",
                        forwarding_name(&d.destination.forwarding),
                        d.destination.weight.get(),
                        d.active_connections,
                        d.inactive_connections
                    );
                }
                _ => {
                    let _ = writeln!(out, "{real:<33} {}", numbers(&d.stats));
                }
            }
        }
    }
    out
}

fn stats_json(s: &Stats) -> Value {
    json!({
        "connections": s.connections, "packets_in": s.packets_in, "packets_out": s.packets_out,
        "bytes_in": s.bytes_in, "bytes_out": s.bytes_out,
        "rates": {
            "connections_per_second": s.rates.cps, "packets_in_per_second": s.rates.in_pps,
            "packets_out_per_second": s.rates.out_pps, "bytes_in_per_second": s.rates.in_bps,
            "bytes_out_per_second": s.rates.out_bps,
        },
    })
}

fn tunnel_json(forwarding: &Forwarding) -> Value {
    match forwarding {
        Forwarding::Tunnel(Tunnel::Ipip) => json!({"type": "ipip"}),
        Forwarding::Tunnel(Tunnel::Gue {
            port,
            checksum,
            remote_checksum,
        }) => {
            json!({"type": "gue", "port": port.get(), "checksum": checksum, "remote_checksum": remote_checksum})
        }
        Forwarding::Tunnel(Tunnel::Gre { checksum }) => {
            json!({"type": "gre", "checksum": checksum})
        }
        _ => Value::Null,
    }
}

/// Renders the table as JSON: every field the kernel reports.
pub fn render_json(info: &Info, listing: &Listing) -> Value {
    let services: Vec<Value> = listing
        .iter()
        .map(|(entry, destinations)| {
            let s = &entry.service;
            let key = match s.key {
                ServiceKey::Tuple { protocol, addr, port } => {
                    json!({"protocol": protocol.to_string(), "address": addr.to_string(), "port": port})
                }
                ServiceKey::Fwmark { family, mark } => {
                    json!({"fwmark": mark.get(), "family": family.to_string()})
                }
            };
            let dests: Vec<Value> = destinations
                .iter()
                .map(|d| {
                    json!({
                        "address": d.destination.addr.to_string(),
                        "port": d.destination.port,
                        "forwarding": forwarding_name(&d.destination.forwarding).to_lowercase(),
                        "tunnel": tunnel_json(&d.destination.forwarding),
                        "weight": d.destination.weight.get(),
                        "upper_threshold": d.destination.thresholds.upper(),
                        "lower_threshold": d.destination.thresholds.lower(),
                        "active_connections": d.active_connections,
                        "inactive_connections": d.inactive_connections,
                        "persistent_connections": d.persistent_connections,
                        "stats": stats_json(&d.stats),
                    })
                })
                .collect();
            json!({
                "service": key,
                "scheduler": s.scheduler.to_string(),
                "persistence": s.persistence.map(|p| json!({"timeout_seconds": p.timeout_secs, "netmask": format!("{:?}", p.netmask)})),
                "one_packet": s.one_packet,
                "persistence_engine": s.persistence_engine.as_ref().map(|p| p.to_string()),
                "stats": stats_json(&entry.stats),
                "destinations": dests,
            })
        })
        .collect();
    json!({
        "version": info.version.to_string(),
        "connection_table_size": info.connection_table_size,
        "services": services,
    })
}
