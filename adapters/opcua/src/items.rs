//! Monitored-item bookkeeping, sans IO: which configured node is which
//! client handle, what the server said about each, which to create again
//! and when; node ids by namespace URI resolved against the server's
//! namespace table of the current session; status codes as qualities.
//!
//! A popular collector creates its items once and stays stuck on
//! `BadNodeIdUnknown` after the server restarts with other node ids. Here
//! every new session resolves and creates every item afresh, and an item
//! the server refused is tried again every `retry` ms, so a node that comes
//! back (or a server that renumbers its namespaces, with `nsu=` ids) is
//! picked up by itself.

use adapter_api::Quality;

/// A configured node id: a namespace (index or URI) and the identifier
/// part as written (`s=...`, `i=...`, `g=...`, `b=...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRef {
    pub ns: Namespace,
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespace {
    Index(u16),
    Uri(String),
}

/// Parses `ns=2;s=Tank1`, `nsu=urn:x;i=5` or `s=Tank1` (namespace 0).
pub fn parse_node(s: &str) -> Result<NodeRef, String> {
    let bad = || {
        format!(
            "node {s:?}: use ns=<index>;s=<name> (or i=, g=, b=), or nsu=<namespace uri>;s=<name>"
        )
    };
    let (ns, id) = if let Some(rest) = s.strip_prefix("nsu=") {
        let (uri, id) = rest.split_once(';').ok_or_else(bad)?;
        if uri.is_empty() {
            return Err(bad());
        }
        (Namespace::Uri(uri.to_string()), id)
    } else if let Some(rest) = s.strip_prefix("ns=") {
        let (n, id) = rest.split_once(';').ok_or_else(bad)?;
        (Namespace::Index(n.parse().map_err(|_| bad())?), id)
    } else {
        (Namespace::Index(0), s)
    };
    let (kind, value) = id.split_once('=').ok_or_else(bad)?;
    let ok = match kind {
        "s" => !value.is_empty(),
        "i" => value.parse::<u32>().is_ok(),
        "g" => value.len() == 36,
        "b" => !value.is_empty(),
        _ => false,
    };
    if !ok || s.chars().any(char::is_control) || s.len() > 4096 {
        return Err(bad());
    }
    Ok(NodeRef {
        ns,
        id: id.to_string(),
    })
}

impl NodeRef {
    /// The node id text for this session (`ns=<index>;...`), given the
    /// server's namespace array; `Err` names a URI the server does not have.
    pub fn resolve(&self, namespaces: &[String]) -> Result<String, String> {
        let idx = match &self.ns {
            Namespace::Index(i) => *i,
            Namespace::Uri(u) => namespaces
                .iter()
                .position(|n| n == u)
                .and_then(|i| u16::try_from(i).ok())
                .ok_or_else(|| format!("the server has no namespace {u:?}"))?,
        };
        Ok(format!("ns={idx};{}", self.id))
    }
}

/// An item's state in the current session.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemState {
    /// Not yet asked for in this session.
    Pending,
    /// The server accepted it.
    Monitored,
    /// Refused (or unresolvable); try again at `retry_at` (ms).
    Failed { why: String, retry_at: i64 },
}

/// Every configured item, by point index; the client handle is index + 1.
pub struct Items {
    nodes: Vec<NodeRef>,
    state: Vec<ItemState>,
    /// The server's monitored item id per point, while it has one.
    ids: Vec<Option<u32>>,
    retry_ms: i64,
}

impl Items {
    pub fn new(nodes: Vec<NodeRef>, retry_ms: u64) -> Items {
        let n = nodes.len();
        Items {
            nodes,
            state: vec![ItemState::Pending; n],
            ids: vec![None; n],
            retry_ms: retry_ms as i64,
        }
    }

    /// A new session: every item must be created again.
    pub fn reset(&mut self) {
        self.state.iter_mut().for_each(|s| *s = ItemState::Pending);
        self.ids.iter_mut().for_each(|s| *s = None);
    }

    /// The server said the node of a monitored item is gone (issue 29,
    /// item 10: deleted, perhaps to be made again): the item is created
    /// again every `retry` ms until the node is back. `true` when this is
    /// news (the item was monitored).
    pub fn lost(&mut self, i: usize, why: &str, now: i64) -> bool {
        match self.state.get_mut(i) {
            Some(s @ ItemState::Monitored) => {
                *s = ItemState::Failed {
                    why: why.to_string(),
                    retry_at: now + self.retry_ms,
                };
                true
            }
            _ => false,
        }
    }

    /// The server's id of the item of point `i`.
    pub fn set_id(&mut self, i: usize, id: u32) {
        if let Some(s) = self.ids.get_mut(i) {
            *s = Some(id);
        }
    }

    /// Takes the server's id of the item of point `i` (to delete it before
    /// the item is created again).
    pub fn take_id(&mut self, i: usize) -> Option<u32> {
        self.ids.get_mut(i).and_then(Option::take)
    }

    pub fn state(&self, i: usize) -> Option<&ItemState> {
        self.state.get(i)
    }

    /// The items to create now, resolved: `(point, handle, node id text)`;
    /// items that cannot be resolved are marked failed and returned in the
    /// second list with the reason.
    #[allow(clippy::type_complexity)]
    pub fn due(
        &mut self,
        namespaces: &[String],
        now: i64,
    ) -> (Vec<(usize, u32, String)>, Vec<(usize, String)>) {
        let (mut create, mut failed) = (Vec::new(), Vec::new());
        for (i, node) in self.nodes.iter().enumerate() {
            let due = match &self.state[i] {
                ItemState::Pending => true,
                ItemState::Failed { retry_at, .. } => now >= *retry_at,
                ItemState::Monitored => false,
            };
            if !due {
                continue;
            }
            match node.resolve(namespaces) {
                Ok(id) => create.push((i, handle(i), id)),
                Err(why) => {
                    self.state[i] = ItemState::Failed {
                        why: why.clone(),
                        retry_at: now + self.retry_ms,
                    };
                    failed.push((i, why));
                }
            }
        }
        (create, failed)
    }

    /// What the server answered for the item of point `i`.
    pub fn created(&mut self, i: usize, result: Result<(), String>, now: i64) {
        if let Some(s) = self.state.get_mut(i) {
            *s = match result {
                Ok(()) => ItemState::Monitored,
                Err(why) => ItemState::Failed {
                    why,
                    retry_at: now + self.retry_ms,
                },
            };
        }
    }

    /// The point of a client handle.
    pub fn point(&self, handle: u32) -> Option<usize> {
        let i = (handle as usize).checked_sub(1)?;
        (i < self.nodes.len()).then_some(i)
    }

    /// When the next failed item is due (ms), if any.
    pub fn next_retry(&self) -> Option<i64> {
        self.state
            .iter()
            .filter_map(|s| match s {
                ItemState::Failed { retry_at, .. } => Some(*retry_at),
                _ => None,
            })
            .min()
    }
}

/// The client handle of point `i`.
pub fn handle(i: usize) -> u32 {
    u32::try_from(i + 1).unwrap_or(u32::MAX)
}

/// An OPC UA status code's severity as a reading quality (the top two
/// bits: 00 good, 01 uncertain, 10/11 bad).
pub fn quality(status: u32) -> Quality {
    match status >> 30 {
        0 => Quality::Good,
        1 => Quality::Uncertain,
        _ => Quality::Bad,
    }
}

/// Whether a status says the node is gone (BadNodeIdUnknown or
/// BadNodeIdInvalid, whatever its info bits): the item is made again.
pub fn node_gone(status: u32) -> bool {
    matches!(status & 0xFFFF_0000, 0x8034_0000 | 0x8033_0000)
}

/// Whether a data value's status says the server's queue overflowed (data
/// was lost between this value and the previous one): InfoType DataValue
/// (bits 10-11 = 01) and the Overflow bit (7).
pub fn overflow(status: u32) -> bool {
    (status >> 10) & 0b11 == 0b01 && status & (1 << 7) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_parse_by_index_or_uri_and_garbage_is_refused() {
        assert_eq!(
            parse_node("ns=2;s=Tank1.Volume").unwrap(),
            NodeRef {
                ns: Namespace::Index(2),
                id: "s=Tank1.Volume".into()
            }
        );
        assert_eq!(parse_node("i=2255").unwrap().ns, Namespace::Index(0));
        let u = parse_node("nsu=urn:a:b;s=X;Y").unwrap();
        assert_eq!(
            u,
            NodeRef {
                ns: Namespace::Uri("urn:a:b".into()),
                id: "s=X;Y".into()
            }
        );
        for bad in [
            "",
            "ns=x;s=a",
            "ns=2;q=1",
            "ns=2;i=abc",
            "nsu=;s=a",
            "ns=2;s=",
            "s=a\u{0}b",
            "ns=70000;s=a",
        ] {
            assert!(parse_node(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_namespace_uri_follows_the_servers_renumbering() {
        let n = parse_node("nsu=urn:site;s=Tank1").unwrap();
        let before = [
            "http://opcfoundation.org/UA/".to_string(),
            "urn:server".into(),
            "urn:site".into(),
        ];
        assert_eq!(n.resolve(&before).unwrap(), "ns=2;s=Tank1");
        let after = [
            before[0].clone(),
            before[1].clone(),
            "urn:other".into(),
            "urn:site".into(),
        ];
        assert_eq!(n.resolve(&after).unwrap(), "ns=3;s=Tank1");
        assert!(n.resolve(&before[..2]).unwrap_err().contains("urn:site"));
        assert_eq!(
            parse_node("ns=2;s=A").unwrap().resolve(&[]).unwrap(),
            "ns=2;s=A"
        );
    }

    #[test]
    fn refused_items_are_retried_and_a_new_session_creates_everything_again() {
        let nodes = vec![
            parse_node("ns=2;s=A").unwrap(),
            parse_node("nsu=urn:x;s=B").unwrap(),
        ];
        let mut it = Items::new(nodes, 30_000);
        let (create, failed) = it.due(&[], 0);
        assert_eq!(create, vec![(0, 1, "ns=2;s=A".to_string())]);
        assert_eq!(failed.len(), 1, "B's namespace is unknown");
        it.created(0, Err("BadNodeIdUnknown".into()), 0);
        assert!(
            it.due(&[], 10_000).0.is_empty(),
            "not before the retry time"
        );
        assert_eq!(it.next_retry(), Some(30_000));
        let ns = ["".to_string(), "urn:x".into()];
        let (create, _) = it.due(&ns, 30_000);
        assert_eq!(create.len(), 2, "both are tried again: {create:?}");
        it.created(0, Ok(()), 30_000);
        it.created(1, Ok(()), 30_000);
        assert!(it.due(&ns, 90_000).0.is_empty());
        it.reset();
        assert_eq!(
            it.due(&ns, 90_000).0.len(),
            2,
            "a new session creates every item"
        );
        assert_eq!(
            (it.point(1), it.point(2), it.point(0), it.point(3)),
            (Some(0), Some(1), None, None)
        );
    }

    #[test]
    fn node_gone_codes_are_seen_whatever_their_info_bits() {
        assert!(node_gone(0x8034_0000));
        assert!(node_gone(0x8033_0400));
        assert!(!node_gone(0x8032_0000));
        assert!(!node_gone(0));
    }

    #[test]
    fn an_item_whose_node_is_gone_is_created_again_with_its_old_id_handed_back() {
        let mut items = Items::new(vec![parse_node("ns=2;s=A").unwrap()], 1000);
        let (create, _) = items.due(&[], 0);
        assert_eq!(create.len(), 1);
        items.created(0, Ok(()), 0);
        items.set_id(0, 77);
        assert!(!items.lost(5, "x", 0), "no such point");
        assert!(items.lost(0, "BadNodeIdUnknown", 100));
        assert!(!items.lost(0, "BadNodeIdUnknown", 150), "news once");
        assert!(items.due(&[], 1099).0.is_empty(), "not before the retry");
        assert_eq!(items.due(&[], 1100).0.len(), 1);
        assert_eq!(items.take_id(0), Some(77), "the old item is deleted first");
        assert_eq!(items.take_id(0), None);
    }

    #[test]
    fn status_codes_become_qualities_and_the_overflow_bit_is_seen() {
        assert_eq!(quality(0), Quality::Good);
        assert_eq!(quality(0x4092_0000), Quality::Uncertain); // UncertainSensorNotAccurate
        assert_eq!(quality(0x8034_0000), Quality::Bad); // BadNodeIdUnknown
        assert_eq!(quality(0x808B_0000), Quality::Bad); // BadSensorFailure
        assert!(overflow(0x0000_0480));
        assert!(
            !overflow(0x0000_0080),
            "the bit counts only with InfoType DataValue"
        );
        assert!(!overflow(0x0000_0400));
    }
}
