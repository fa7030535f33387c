//! The daemon's table read back from the kernel: what its sets hold and which rules it has.

use netlink_packet_netfilter::NetfilterProtoFamily;

use super::Elements;
use super::rules::RuleComments;
use super::table;
use super::transport::{NfnlError, NfnlSocket};

/// What the node's table holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contents {
    /// The sets' elements.
    pub elements: Elements,
    /// The rules' comments, per chain in order (see [`rules`](super::rules)).
    pub rules: RuleComments,
}

impl Contents {
    /// Reads the table; `None` when the node has no such table.
    pub fn read(nft: &mut NfnlSocket) -> Result<Option<Self>, NfnlError> {
        let ours = nft
            .tables()?
            .iter()
            .any(|(family, name)| *family == NetfilterProtoFamily::Inet && name == table::TABLE);
        if !ours {
            return Ok(None);
        }
        let mut elements = Elements::default();
        for set in table::SETS {
            for key in nft.set_keys(NetfilterProtoFamily::Inet, table::TABLE, set)? {
                elements.insert_key(set, &key);
            }
        }
        let rules = nft.rule_comments(NetfilterProtoFamily::Inet, table::TABLE)?;
        Ok(Some(Self { elements, rules }))
    }
}
