//! The netfilter side of the node: the daemon's own nftables table, programmed over netlink.
//!
//! IPVS balances what reaches it; whether traffic reaches it, and how replies find their way
//! back, is netfilter's: masquerading traffic that came through another node, hairpin
//! connections, load-balancer source ranges, VIP ports no Service defines. kube-proxy's IPVS
//! mode does it with iptables and ipset; this controller keeps it in one nftables table of its
//! own, changed in transactions that apply whole or not at all.
//!
//! - [`elements`]: what the sets hold and should hold for a desired state, and the changes
//!   between the two.
//! - [`table`]: the daemon's table: its sets and how their elements are written.
//! - [`rules`]: its chains and rules, and what they masquerade, mark or drop.
//! - [`expr`]: the rules' expressions.
//! - [`contents`]: the table read back.
//! - [`conntrack`]: stale UDP flows, deleted.
//! - [`transport`]: nftables over a `NETLINK_NETFILTER` socket: transactions
//!   ([`NfnlSocket::transact`]) and listings.

pub mod conntrack;
pub mod contents;
pub mod elements;
pub mod expr;
pub mod rules;
pub mod table;
pub mod transport;

pub use contents::Contents;
pub use elements::Elements;
pub use rules::RuleConfig;
pub use table::ServicePort;
pub use transport::{Change, Nfnl, NfnlError, NfnlSocket};
