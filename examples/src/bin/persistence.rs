//! Example 2 — session persistence and schedulers.
//!
//! The same network as `nat-weights` (a client, a director running IPVS, three backends that
//! answer with their name), and three ways of deciding which backend gets a connection:
//!
//! 1. **Persistence.** A round-robin (`rr`) virtual server made persistent: the first connection
//!    of a client creates a *persistence template* in the kernel (client address → backend), and
//!    every later connection of that client goes where the template points, whatever the
//!    scheduler would say. The library reads the templates back as each destination's
//!    *persistent connection* count. A second client address gets its own template, hence the
//!    next backend in the round. Once the templates have expired, the client is scheduled
//!    afresh: round-robin moves on, so it now sticks to a third backend. A template expires
//!    only once the connections it made have left the kernel's connection table; the clients
//!    here close with a reset, which IPVS forgets after 10 s, so the timeout is 15 s (a
//!    template whose timer fires while its connections remain is held for another minute).
//! 2. **Source hashing** (`sh`): no state at all — the backend is a hash of the client's address,
//!    so each address always lands on the same backend, and different addresses spread.
//! 3. **Firewall marks.** A virtual server can be keyed by a packet mark instead of an address.
//!    Marks are usually set by iptables; here each socket sets its own with `SO_MARK`. A mark is
//!    only seen in the namespace where it was set, so that client runs in the director itself
//!    (IPVS balances locally originated connections too): mark 1 and mark 2 reach two different
//!    services, unmarked connections are not balanced at all.
//!
//! Every part checks what it shows; the program exits non-zero when traffic did not go where it
//! says. The namespaces are held by open file descriptors only, so the kernel frees them, and
//! their IPVS tables, when the program ends, however it ends.
//!
//! Run it where IPVS is: `cargo xtask kernel-tests` runs every example; on a host with IPVS,
//! `cargo run -p examples --bin persistence` as root.

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::io::{self, BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::num::NonZeroU32;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use examples::{Unexpected, expect, render_tally};
use integration::Netns;
use integration::backend::{Backend, CLIENT_TIMEOUT};
use integration::link;
use integration::topology::{CLIENT_ADDR, LoadBalancerTopology, VIP};
use ipvs::Ipvs;
use ipvs::model::{
    AddressFamily, Destination, Forwarding, Persistence, PersistenceNetmask, Scheduler, Service,
    ServiceKey,
};

/// The persistence timeout of part 1, in seconds.
///
/// It must exceed the 10 s IPVS keeps a reset TCP connection (CLOSE state): a template whose
/// timer fires while connections it made are still in the table is kept another 60 s.
const PERSISTENCE_SECS: u32 = 15;
/// How long part 1 waits at most for the templates to expire.
const TEMPLATE_WAIT: Duration = Duration::from_secs(40);
/// The second client of part 1.
const SECOND_CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
/// The client addresses of part 2.
const HASHED_CLIENTS: [Ipv4Addr; 6] = [
    Ipv4Addr::new(192, 0, 2, 10),
    Ipv4Addr::new(192, 0, 2, 11),
    Ipv4Addr::new(192, 0, 2, 12),
    Ipv4Addr::new(192, 0, 2, 13),
    Ipv4Addr::new(192, 0, 2, 14),
    Ipv4Addr::new(192, 0, 2, 15),
];
/// Where the local client of part 3 connects; a plain server of the director listens there.
const MARKED_TARGET: SocketAddrV4 = SocketAddrV4::new(VIP, 8000);
/// The name of that plain server.
const NOT_BALANCED: &str = "director (no IPVS)";

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

fn main() -> ExitCode {
    match run() {
        Ok(()) => {
            println!(
                "\nOK: persistence, source hashing and firewall marks sent every connection where \
                 they say."
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\nFAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    println!("Building the network: client → director → 3 backends, one namespace each…");
    let net = LoadBalancerTopology::build(3)?;
    net.client.run(|| -> io::Result<()> {
        for addr in std::iter::once(SECOND_CLIENT).chain(HASHED_CLIENTS) {
            link::add_address("eth0", addr.into(), 24)?;
        }
        Ok(())
    })??;
    // One handle for the whole program: its socket lives in the director's namespace, the
    // calling thread stays where it is.
    let mut ipvs = Ipvs::in_namespace(net.director.path())?;

    persistence(&net, &mut ipvs)?;
    source_hashing(&net, &mut ipvs)?;
    firewall_marks(&net, &mut ipvs)?;
    Ok(())
}

/// Part 1: a persistent round-robin service.
fn persistence(net: &LoadBalancerTopology, ipvs: &mut Ipvs) -> Result<()> {
    let vip = SocketAddrV4::new(VIP, 80);
    let key = ServiceKey::tcp(VIP, 80);
    println!(
        "\n== 1. Persistence ==\nVirtual server {vip}: rr, persistent for {PERSISTENCE_SECS} s \
         (netmask /32: each client address on its own)."
    );
    let mut service = Service::new(key, Scheduler::RoundRobin);
    service.persistence = Some(Persistence {
        timeout_secs: PERSISTENCE_SECS,
        netmask: PersistenceNetmask::host(AddressFamily::Ipv4),
    });
    ipvs.add_service(&service)?;
    add_backends(ipvs, &key, net, 0..3)?;

    let first = sticky(net, ipvs, &key, CLIENT_ADDR, vip)?;
    let second = sticky(net, ipvs, &key, SECOND_CLIENT, vip)?;
    expect(
        second != first,
        format!("round-robin gave the second client's template the backend of the first ({first})"),
    )?;

    println!(
        "\nWaiting for the templates to expire, {PERSISTENCE_SECS} s after each client's last \
         connection (longer than the 10 s IPVS keeps a reset connection: a template is held while \
         its connections are)…"
    );
    let started = Instant::now();
    loop {
        let templates: u32 = ipvs
            .destinations(&key)?
            .iter()
            .map(|d| d.persistent_connections)
            .sum();
        if templates == 0 {
            break;
        }
        expect(
            started.elapsed() < TEMPLATE_WAIT,
            format!(
                "{templates} templates still there after {TEMPLATE_WAIT:?} (a template whose \
                 timer fired while its connections were still in the table is held 60 s more)"
            ),
        )?;
        std::thread::sleep(Duration::from_millis(250));
    }
    println!(
        "  all templates gone after {:.1} s.",
        started.elapsed().as_secs_f64()
    );

    let again = sticky(net, ipvs, &key, CLIENT_ADDR, vip)?;
    expect(
        again != first && again != second,
        format!(
            "after its template expired, {CLIENT_ADDR} should have been scheduled to the next \
             backend in the round (neither {first} nor {second}), got {again}"
        ),
    )?;
    println!(
        "  {CLIENT_ADDR} was scheduled afresh: round-robin moved on, from {first} to {again}."
    );
    Ok(())
}

/// Opens connections from `client` to `vip`, checks that they all reached one backend and that
/// the kernel holds one template for it, and returns the backend's name.
fn sticky(
    net: &LoadBalancerTopology,
    ipvs: &mut Ipvs,
    key: &ServiceKey,
    client: Ipv4Addr,
    vip: SocketAddrV4,
) -> Result<String> {
    const CONNECTIONS: usize = 15;
    println!("\n{CONNECTIONS} connections from {client}:");
    let counts = tally_from(&net.client, Some(client), None, vip, CONNECTIONS)?;
    println!("{}", render_tally(&counts));
    let backend = only_backend(&counts, &format!("connections from {client}"))?;

    println!("The kernel's table (read back through the library):");
    let destinations = ipvs.destinations(key)?;
    for backend in &net.backends {
        let Some(d) = destinations
            .iter()
            .find(|d| d.destination.addr == backend.addr().ip())
        else {
            continue;
        };
        println!(
            "  {:<10} {:<18} templates {}  active {}  inactive {}",
            backend.name(),
            backend.addr().to_string(),
            d.persistent_connections,
            d.active_connections,
            d.inactive_connections
        );
    }
    let templates = templates_of(net, &destinations, &backend);
    expect(
        templates == 1,
        format!("the kernel reports {templates} persistence templates for {backend}, not 1"),
    )?;
    Ok(backend)
}

/// The persistent connection count the kernel reports for the backend called `name`.
fn templates_of(
    net: &LoadBalancerTopology,
    destinations: &[ipvs::model::DestinationEntry],
    name: &str,
) -> u32 {
    net.backends
        .iter()
        .filter(|b| b.name() == name)
        .flat_map(|b| {
            destinations
                .iter()
                .filter(move |d| d.destination.addr == b.addr().ip())
        })
        .map(|d| d.persistent_connections)
        .sum()
}

/// Part 2: a source-hashing service.
fn source_hashing(net: &LoadBalancerTopology, ipvs: &mut Ipvs) -> Result<()> {
    const ROUNDS: usize = 4;
    let vip = SocketAddrV4::new(VIP, 81);
    let key = ServiceKey::tcp(VIP, 81);
    println!(
        "\n== 2. Source hashing ==\nVirtual server {vip}: sh (the backend is a hash of the client address)."
    );
    ipvs.add_service(&Service::new(
        key,
        Scheduler::SourceHashing {
            fallback: false,
            port: false,
        },
    ))?;
    add_backends(ipvs, &key, net, 0..3)?;

    println!(
        "\n{ROUNDS} rounds: each round, one connection from each of {} client addresses.",
        HASHED_CLIENTS.len()
    );
    let mut seen: BTreeMap<Ipv4Addr, BTreeMap<String, usize>> = BTreeMap::new();
    for _ in 0..ROUNDS {
        for client in HASHED_CLIENTS {
            let counts = tally_from(&net.client, Some(client), None, vip, 1)?;
            let entry = seen.entry(client).or_default();
            for (name, n) in counts {
                *entry.entry(name).or_insert(0) += n;
            }
        }
    }
    println!("  {:<16} {:<24} {:>11}", "client", "backend", "connections");
    let mut totals = BTreeMap::new();
    for (client, counts) in &seen {
        for (name, n) in counts {
            println!("  {:<16} {name:<24} {n:>11}", client.to_string());
            *totals.entry(name.clone()).or_insert(0) += n;
        }
    }
    println!("\nAll together:\n{}", render_tally(&totals));

    let mut used = BTreeSet::new();
    for (client, counts) in &seen {
        used.insert(only_backend(counts, &format!("connections from {client}"))?);
    }
    expect(
        used.len() > 1,
        format!("all client addresses hashed to one backend: {used:?}"),
    )?;
    println!(
        "Each address always reached the same backend; the {} addresses spread over {} backends.",
        HASHED_CLIENTS.len(),
        used.len()
    );
    Ok(())
}

/// Part 3: two services keyed by firewall marks, and a client in the director that marks its
/// sockets with `SO_MARK`.
fn firewall_marks(net: &LoadBalancerTopology, ipvs: &mut Ipvs) -> Result<()> {
    const CONNECTIONS: usize = 8;
    println!("\n== 3. Firewall marks ==");
    let marks = [(1, 0..2), (2, 2..3)];
    for (mark, backends) in marks.clone() {
        let key = fwmark(mark)?;
        ipvs.add_service(&Service::new(key, Scheduler::RoundRobin))?;
        let names: Vec<&str> = net.backends[backends.clone()]
            .iter()
            .map(Backend::name)
            .collect();
        println!("Virtual server {key}: rr over {}.", names.join(", "));
        add_backends(ipvs, &key, net, backends)?;
    }
    // Connections IPVS does not take reach this plain server of the director.
    let _plain = Backend::start(&net.director, NOT_BALANCED, SocketAddr::V4(MARKED_TARGET))?;
    println!(
        "A plain server of the director, not in IPVS, listens on {MARKED_TARGET}: it answers \
         \"{NOT_BALANCED}\"."
    );
    println!(
        "\nA client in the director connects to {MARKED_TARGET}, {CONNECTIONS} times per mark; \
         the mark alone decides."
    );

    let mut by_mark = Vec::new();
    for mark in [Some(1), Some(2), Some(7), None] {
        let counts = tally_from(&net.director, None, mark, MARKED_TARGET, CONNECTIONS)?;
        let label = match mark {
            Some(7) => "mark 7 (no service):".to_string(),
            Some(m) => format!("mark {m}:"),
            None => "no mark:".to_string(),
        };
        println!("\n{label}\n{}", render_tally(&counts));
        by_mark.push((mark, counts));
    }

    for (mark, counts) in &by_mark {
        let want: BTreeSet<&str> = match mark {
            Some(1) => net.backends[0..2].iter().map(Backend::name).collect(),
            Some(2) => net.backends[2..3].iter().map(Backend::name).collect(),
            _ => BTreeSet::from([NOT_BALANCED]),
        };
        let got: BTreeSet<&str> = counts.keys().map(String::as_str).collect();
        expect(
            got == want,
            format!("with mark {mark:?}, expected answers from {want:?}, got {counts:?}"),
        )?;
    }
    println!(
        "\nMarked connections went to their mark's service, and only there; the others were not \
         balanced."
    );
    Ok(())
}

/// The key of the IPv4 service for firewall mark `mark`.
fn fwmark(mark: u32) -> Result<ServiceKey> {
    Ok(ServiceKey::Fwmark {
        family: AddressFamily::Ipv4,
        mark: NonZeroU32::new(mark).ok_or("firewall mark 0 cannot name a service")?,
    })
}

/// Adds the backends `range` (0-based) to the service `key`, by NAT and with weight 1.
fn add_backends(
    ipvs: &mut Ipvs,
    key: &ServiceKey,
    net: &LoadBalancerTopology,
    range: std::ops::Range<usize>,
) -> Result<()> {
    for backend in &net.backends[range] {
        let real = backend.addr();
        ipvs.add_destination(
            key,
            &Destination::new(real.ip(), real.port(), Forwarding::Masquerade),
        )?;
    }
    Ok(())
}

/// The one backend that answered all of `counts`, or an error naming `what` went elsewhere.
fn only_backend(counts: &BTreeMap<String, usize>, what: &str) -> Result<String, Unexpected> {
    let mut names = counts.keys();
    match (names.next(), names.next()) {
        (Some(name), None) if !name.starts_with('(') => Ok(name.clone()),
        _ => Err(Unexpected(format!(
            "{what} should all reach one backend, got {counts:?}"
        ))),
    }
}

/// Opens `count` connections to `to` from inside `netns`, one after another — from the local
/// address `from` and with the firewall mark `mark` when given — and counts the answers by
/// backend name. Failed connections are counted under `"(failed: <error>)"`.
///
/// Each connection ends with a reset rather than a FIN: IPVS then forgets it 10 s later (CLOSE)
/// instead of 60 to 120 s (CLOSE_WAIT, TIME_WAIT), and a persistence template lives at least
/// as long as the connections it made.
fn tally_from(
    netns: &Netns,
    from: Option<Ipv4Addr>,
    mark: Option<u32>,
    to: SocketAddrV4,
    count: usize,
) -> io::Result<BTreeMap<String, usize>> {
    netns.run(move || {
        let mut counts = BTreeMap::new();
        for _ in 0..count {
            let key = match ask_name(from, mark, to) {
                Ok(name) => name,
                Err(e) => format!("(failed: {e})"),
            };
            *counts.entry(key).or_insert(0) += 1;
        }
        counts
    })
}

/// One connection: connect, read the backend's name, reset.
fn ask_name(from: Option<Ipv4Addr>, mark: Option<u32>, to: SocketAddrV4) -> io::Result<String> {
    let stream = socket::connect(from, mark, to, CLIENT_TIMEOUT)?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    socket::close_with_reset(stream)?;
    let name = line.trim_end().to_string();
    if name.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed without a name",
        ));
    }
    Ok(name)
}

/// The three socket calls the standard library does not offer: `bind` before `connect`,
/// `SO_MARK`, and `SO_LINGER` (through nix).
mod socket {
    use std::io;
    use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use nix::errno::Errno;
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect as connect_to, setsockopt,
        socket, sockopt,
    };

    /// Connects a TCP socket to `to`, bound first to the local address `from` and marked with
    /// `mark` (every packet it sends carries it) when given, within `timeout`.
    pub(super) fn connect(
        from: Option<Ipv4Addr>,
        mark: Option<u32>,
        to: SocketAddrV4,
        timeout: Duration,
    ) -> io::Result<TcpStream> {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        let stream = TcpStream::from(fd);
        // SO_SNDTIMEO, which this sets, also bounds a blocking connect() on Linux.
        stream.set_write_timeout(Some(timeout))?;
        stream.set_read_timeout(Some(timeout))?;
        if let Some(mark) = mark {
            setsockopt(&stream, sockopt::Mark, &mark)
                .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("SO_MARK: {e}")))?;
        }
        if let Some(from) = from {
            bind(
                stream.as_raw_fd(),
                &SockaddrIn::from(SocketAddrV4::new(from, 0)),
            )
            .map_err(|e| {
                io::Error::new(io::Error::from(e).kind(), format!("bind to {from}: {e}"))
            })?;
        }
        match connect_to(stream.as_raw_fd(), &SockaddrIn::from(to)) {
            Ok(()) => Ok(stream),
            Err(Errno::EINPROGRESS) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect to {to}: no answer within {timeout:?}"),
            )),
            Err(e) => Err(io::Error::new(
                io::Error::from(e).kind(),
                format!("connect to {to}: {e}"),
            )),
        }
    }

    /// Closes `stream` with a reset (`SO_LINGER` with a zero timeout).
    pub(super) fn close_with_reset(stream: TcpStream) -> io::Result<()> {
        let linger = nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        setsockopt(&stream, sockopt::Linger, &linger)?;
        Ok(())
    }
}
