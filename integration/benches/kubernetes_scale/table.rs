//! A proxy's table and its own figures, read inside its namespace.

use super::*;

/// How far the namespace's table is from `expected`: `None` when complete, else what is
/// missing or wrong, in words.
pub(crate) fn incomplete(netns: &Netns, expected: &[(ServiceKey, usize)]) -> Option<String> {
    netns
        .run(|| {
            let mut ipvs = Ipvs::open().expect("IPVS handle");
            let present: HashSet<ServiceKey> = match ipvs.services() {
                Ok(services) => services.into_iter().map(|s| s.service.key).collect(),
                Err(e) => return Some(format!("cannot list the table: {e}")),
            };
            let missing: Vec<&ServiceKey> = expected
                .iter()
                .map(|(k, _)| k)
                .filter(|k| !present.contains(k))
                .collect();
            if let Some(first) = missing.first() {
                return Some(format!(
                    "{} of {} virtual servers missing ({} present), {first} among them",
                    missing.len(),
                    expected.len(),
                    present.len()
                ));
            }
            let keys: Vec<ServiceKey> = expected.iter().map(|(k, _)| *k).collect();
            let listed = match ipvs.destinations_of(&keys) {
                Ok(listed) => listed,
                Err(e) => return Some(format!("cannot list the real servers: {e}")),
            };
            let wrong: Vec<String> = listed
                .iter()
                .map(|d| ready_count(d))
                .zip(expected)
                .filter(|(have, (_, want))| have != want)
                .map(|(have, (key, want))| format!("{key}: {have} ready, not {want}"))
                .collect();
            (!wrong.is_empty()).then(|| {
                format!(
                    "{} virtual servers with the wrong real servers, as {}",
                    wrong.len(),
                    wrong[0]
                )
            })
        })
        .unwrap_or_else(|e| Some(format!("cannot enter the namespace: {e}")))
}

/// What [`Running::wait_complete`] saw: when (Unix seconds) a listing first found the table
/// complete, the end of the sync that left it so, and the metrics read then.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Completed {
    pub(crate) seen: f64,
    pub(crate) synced: f64,
    pub(crate) metrics: Metrics,
}

/// The proxy's metrics that matter here: the end of its last sync, and (ipvs-proxy) the IPVS
/// operations it made.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Metrics {
    pub(crate) last_sync: f64,
    /// Syncs so far and their seconds (`kubeproxy_sync_proxy_rules_duration_seconds`, all
    /// families).
    pub(crate) syncs: u64,
    pub(crate) sync_seconds: f64,
    /// Full syncs so far (`kubeproxy_sync_full_proxy_rules_duration_seconds`, which only
    /// ipvs-proxy serves).
    pub(crate) full_syncs: u64,
    pub(crate) operations: Option<u64>,
}

impl Metrics {
    /// kube-router's, from its log (`--v=1` logs the end of every sync with its length; its
    /// metrics have the lengths only as a histogram, without the time of the last).
    pub(crate) fn from_kube_router_log(log: &str) -> Option<Self> {
        let year = klog::year_of(unix_seconds(SystemTime::now()));
        let syncs = klog::messages(log, "sync ipvs services took ", year);
        let (last_sync, _) = *syncs.last()?;
        Some(Metrics {
            last_sync,
            syncs: syncs.len() as u64,
            sync_seconds: syncs
                .iter()
                .filter_map(|(_, took)| klog::go_duration(took))
                .sum(),
            full_syncs: syncs.len() as u64,
            operations: None,
        })
    }

    pub(crate) fn read(netns: &Netns) -> Option<Self> {
        let (status, text) = http_get(netns, METRICS, "/metrics").ok()?;
        if status != 200 {
            return None;
        }
        let scrape = Scrape::parse(&text);
        // The family exists from the start; a counter without a label set yet is zero.
        let counts_operations = scrape.declares("ipvs_proxy_operations")
            || scrape
                .labelled("ipvs_proxy_operations_total")
                .next()
                .is_some();
        Some(Metrics {
            // kube-proxy labels it per IP family: the latest of any.
            last_sync: scrape.max("kubeproxy_sync_proxy_rules_last_timestamp_seconds"),
            syncs: scrape.sum("kubeproxy_sync_proxy_rules_duration_seconds_count") as u64,
            sync_seconds: scrape.sum("kubeproxy_sync_proxy_rules_duration_seconds_sum"),
            full_syncs: scrape.sum("kubeproxy_sync_full_proxy_rules_duration_seconds_count") as u64,
            operations: counts_operations.then(|| scrape.sum("ipvs_proxy_operations_total") as u64),
        })
    }
}

/// A Go CPU profile of `secs` seconds from the pprof handler on the proxy's metrics address.
pub(crate) fn cpu_profile(netns: &Netns, secs: u64) -> std::io::Result<Vec<u8>> {
    netns.run(|| -> std::io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect_timeout(&METRICS, Duration::from_secs(10))?;
        stream.set_read_timeout(Some(Duration::from_secs(secs + 120)))?;
        write!(
            stream,
            "GET /debug/pprof/profile?seconds={secs} HTTP/1.0\r\nHost: {METRICS}\r\n\r\n"
        )?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let body = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|at| response.split_off(at + 4))
            .unwrap_or_default();
        if !response.starts_with(b"HTTP/1.0 200") && !response.starts_with(b"HTTP/1.1 200") {
            return Err(std::io::Error::other(format!(
                "{}",
                String::from_utf8_lossy(&response[..response.len().min(80)])
            )));
        }
        Ok(body)
    })?
}

/// Real servers that take new connections (weight above 0).
pub(crate) fn ready_count(destinations: &[DestinationEntry]) -> usize {
    destinations
        .iter()
        .filter(|d| d.destination.weight.get() > 0)
        .count()
}

/// Whether every virtual server of `keys` shows `ready` ready real servers.
pub(crate) fn shows(ipvs: &mut Ipvs, keys: &[ServiceKey], ready: usize) -> bool {
    keys.iter().all(|key| {
        ipvs.destinations(key)
            .is_ok_and(|d| ready_count(&d) == ready)
    })
}

/// How long to wait before looking again, `elapsed` into a wait: often at first, then about
/// twenty times over the wait so far, so that a minutes-long sync is not slowed by the watching.
pub(crate) fn poll_interval(elapsed: Duration) -> Duration {
    (elapsed / 20).clamp(Duration::from_millis(2), Duration::from_millis(250))
}
