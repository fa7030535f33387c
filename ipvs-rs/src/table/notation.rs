//! The `ipvsadm` command-line notation of operations, for logs.

use std::fmt;
use std::net::IpAddr;

use crate::codec::Operation;
use crate::model::{
    AddressFamily, Destination, DestinationKey, Forwarding, PersistenceNetmask, Protocol,
    Scheduler, Service, ServiceKey, Tunnel,
};

/// An [`Operation`] written as the `ipvsadm` arguments that would make it, on one line:
/// what people expect to read in logs.
///
/// | operation | notation |
/// |---|---|
/// | `AddService` | `-A -t 10.0.0.1:80 -s wlc -p 300 -M 255.255.255.0 -o --pe sip -b sh-port` |
/// | `EditService` | `-E` and the same options |
/// | `DeleteService` | `-D -t 10.0.0.1:80` |
/// | `AddDestination` | `-a -t 10.0.0.1:80 -r 10.1.0.1:8080 -m -w 1 -x 100 -y 50` |
/// | `EditDestination` | `-e` and the same options |
/// | `DeleteDestination` | `-d -t 10.0.0.1:80 -r 10.1.0.1:8080` |
/// | `Flush` | `-C` |
/// | `ZeroCounters` | `-Z` or `-Z -t 10.0.0.1:80` |
/// | `SetTimeouts` | `--set 900 0 300` (0: unchanged) |
/// | `StartDaemon` | `--start-daemon master --mcast-interface eth0 --syncid 1` |
/// | `StopDaemon` | `--stop-daemon master` |
///
/// Services are `-t` (TCP), `-u` (UDP), `--sctp-service`, `-f MARK` (followed by `-6` for
/// IPv6); IPv6 addresses are bracketed. Forwarding is `-m` (masquerading), `-g` (direct
/// routing), `-i` (tunnel, with `--tun-type`, `--tun-port` and the checksum switch for GUE
/// and GRE). Options at their default (no thresholds, no persistence, the host netmask) are
/// left out. Where `ipvsadm` has no notation this one makes up a readable one: `--local` and
/// `--bypass` forwarding, `--protocol N ADDR:PORT` for a protocol other than TCP, UDP and
/// SCTP.
#[derive(Debug, Clone, Copy)]
pub struct IpvsadmNotation<'a>(pub &'a Operation);

impl fmt::Display for IpvsadmNotation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Operation::AddService(s) => {
                write!(f, "-A {}{}", ServiceDesignation(&s.key), ServiceOptions(s))
            }
            Operation::EditService(s) => {
                write!(f, "-E {}{}", ServiceDesignation(&s.key), ServiceOptions(s))
            }
            Operation::DeleteService(k) => write!(f, "-D {}", ServiceDesignation(k)),
            Operation::AddDestination(k, d) => {
                write!(f, "-a {}{}", ServiceDesignation(k), DestinationOptions(d))
            }
            Operation::EditDestination(k, d) => {
                write!(f, "-e {}{}", ServiceDesignation(k), DestinationOptions(d))
            }
            Operation::DeleteDestination(k, d) => {
                write!(f, "-d {} -r {}", ServiceDesignation(k), Endpoint(d))
            }
            Operation::Flush => f.write_str("-C"),
            Operation::ZeroCounters(None) => f.write_str("-Z"),
            Operation::ZeroCounters(Some(k)) => write!(f, "-Z {}", ServiceDesignation(k)),
            Operation::SetTimeouts(t) => {
                let secs = |v: Option<std::num::NonZeroU32>| v.map_or(0, |v| v.get());
                write!(
                    f,
                    "--set {} {} {}",
                    secs(t.tcp),
                    secs(t.tcp_fin),
                    secs(t.udp)
                )
            }
            Operation::StartDaemon(d) => {
                write!(
                    f,
                    "--start-daemon {} --mcast-interface {} --syncid {}",
                    d.state, d.interface, d.sync_id
                )?;
                if let Some(len) = d.max_len {
                    write!(f, " --sync-maxlen {len}")?;
                }
                if let Some(group) = d.group {
                    write!(f, " --mcast-group {group}")?;
                }
                if let Some(port) = d.port {
                    write!(f, " --mcast-port {port}")?;
                }
                if let Some(ttl) = d.ttl {
                    write!(f, " --mcast-ttl {ttl}")?;
                }
                Ok(())
            }
            Operation::StopDaemon(state) => write!(f, "--stop-daemon {state}"),
        }
    }
}

/// `ADDR:PORT`, with IPv6 addresses bracketed.
struct Endpoint<'a>(&'a DestinationKey);

impl fmt::Display for Endpoint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        address_port(f, self.0.addr, self.0.port)
    }
}

fn address_port(f: &mut fmt::Formatter<'_>, addr: IpAddr, port: u16) -> fmt::Result {
    match addr {
        IpAddr::V4(a) => write!(f, "{a}:{port}"),
        IpAddr::V6(a) => write!(f, "[{a}]:{port}"),
    }
}

/// How `ipvsadm` names a service: `-t 10.0.0.1:80`, `-f 7 -6`, ...
pub(super) struct ServiceDesignation<'a>(pub(super) &'a ServiceKey);

impl fmt::Display for ServiceDesignation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self.0 {
            ServiceKey::Tuple {
                protocol,
                addr,
                port,
            } => {
                match protocol {
                    Protocol::Tcp => f.write_str("-t ")?,
                    Protocol::Udp => f.write_str("-u ")?,
                    Protocol::Sctp => f.write_str("--sctp-service ")?,
                    Protocol::Other(n) => write!(f, "--protocol {n} ")?,
                }
                address_port(f, addr, port)
            }
            ServiceKey::Fwmark { family, mark } => {
                write!(f, "-f {mark}")?;
                if family == AddressFamily::Ipv6 {
                    f.write_str(" -6")?;
                }
                Ok(())
            }
        }
    }
}

/// The options of a service after its designation, each with a leading space.
pub(super) struct ServiceOptions<'a>(pub(super) &'a Service);

impl fmt::Display for ServiceOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        write!(f, " -s {}", s.scheduler)?;
        scheduler_flags(f, &s.scheduler)?;
        if let Some(p) = s.persistence {
            write!(f, " -p {}", p.timeout_secs)?;
            if p.netmask != PersistenceNetmask::host(p.netmask.family()) {
                match p.netmask {
                    PersistenceNetmask::V4(mask) => write!(f, " -M {mask}")?,
                    PersistenceNetmask::V6(len) => write!(f, " -M {}", len.get())?,
                }
            }
        }
        if s.one_packet {
            f.write_str(" -o")?;
        }
        if let Some(pe) = &s.persistence_engine {
            write!(f, " --pe {pe}")?;
        }
        Ok(())
    }
}

/// ` -b NAME,NAME` for the scheduler flags that are set, with `ipvsadm`'s names.
fn scheduler_flags(f: &mut fmt::Formatter<'_>, scheduler: &Scheduler) -> fmt::Result {
    let prefix = match scheduler {
        Scheduler::SourceHashing { .. } => "sh-",
        Scheduler::MaglevHashing { .. } => "mh-",
        _ => "",
    };
    let flags = scheduler.flags();
    let names: [(u32, &str); 3] = if prefix.is_empty() {
        [(0x08, "flag-1"), (0x10, "flag-2"), (0x20, "flag-3")]
    } else {
        [(0x08, "fallback"), (0x10, "port"), (0x20, "flag-3")]
    };
    let mut first = true;
    for (bit, name) in names {
        if flags & bit == 0 {
            continue;
        }
        f.write_str(if first { " -b " } else { "," })?;
        first = false;
        if bit == 0x20 {
            f.write_str(name)?;
        } else {
            write!(f, "{prefix}{name}")?;
        }
    }
    Ok(())
}

/// ` -r ADDR:PORT`, the forwarding switch, the weight and the thresholds of a destination.
pub(super) struct DestinationOptions<'a>(pub(super) &'a Destination);

impl fmt::Display for DestinationOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        f.write_str(" -r ")?;
        address_port(f, d.addr, d.port)?;
        match d.forwarding {
            Forwarding::Masquerade => f.write_str(" -m")?,
            Forwarding::DirectRouting => f.write_str(" -g")?,
            Forwarding::Local => f.write_str(" --local")?,
            Forwarding::Bypass => f.write_str(" --bypass")?,
            Forwarding::Tunnel(Tunnel::Ipip) => f.write_str(" -i")?,
            Forwarding::Tunnel(Tunnel::Gue {
                port,
                checksum,
                remote_checksum,
            }) => {
                write!(f, " -i --tun-type gue --tun-port {port}")?;
                match (checksum, remote_checksum) {
                    (false, false) => f.write_str(" --tun-nocsum")?,
                    (true, false) => f.write_str(" --tun-csum")?,
                    (false, true) => f.write_str(" --tun-remcsum")?,
                    (true, true) => f.write_str(" --tun-csum --tun-remcsum")?,
                }
            }
            Forwarding::Tunnel(Tunnel::Gre { checksum }) => {
                f.write_str(" -i --tun-type gre")?;
                f.write_str(if checksum {
                    " --tun-csum"
                } else {
                    " --tun-nocsum"
                })?;
            }
        }
        write!(f, " -w {}", d.weight.get())?;
        if d.thresholds.upper() != 0 {
            write!(f, " -x {}", d.thresholds.upper())?;
        }
        if d.thresholds.lower() != 0 {
            write!(f, " -y {}", d.thresholds.lower())?;
        }
        Ok(())
    }
}
