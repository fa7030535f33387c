//! A namespace's IPVS table in a form tests compare and print.

use std::collections::BTreeMap;
use std::io;

use ipvs::Ipvs;

use crate::Netns;

/// An IPVS table as `"TCP 10.96.0.10:80" → ["203.0.113.2:8080 w1", ...]`, real servers sorted.
pub type Table = BTreeMap<String, Vec<String>>;

/// The IPVS table of `netns`: every virtual server with its real servers and their weights.
pub fn listing(netns: &Netns) -> io::Result<Table> {
    netns.run(|| -> io::Result<Table> {
        let table = Ipvs::open()
            .and_then(|mut ipvs| ipvs.table())
            .map_err(io::Error::other)?;
        Ok(table
            .iter()
            .map(|config| {
                let mut dests: Vec<String> = config
                    .destinations()
                    .map(|d| format!("{}:{} w{}", d.addr, d.port, d.weight.get()))
                    .collect();
                dests.sort();
                (config.key().to_string(), dests)
            })
            .collect())
    })?
}
