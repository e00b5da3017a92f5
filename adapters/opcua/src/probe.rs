//! `edge-agent probe opcua URL --browse` / `--read NODE`: one session with
//! the same connection code and security rules as the adapter, then a
//! browse of the Objects folder (a few levels) or a read of one node.

use adapter_api::probe::{Failure, ProbeError};
use adapter_api::runner::{Device, within};
use opcua::types::{
    AttributeId, BrowseDescription, BrowseDirection, NodeClass, NodeId, ReadValueId,
    ReferenceTypeId, TimestampsToReturn,
};

use crate::OpcUaDevice;
use crate::items::{Items, Namespace, NodeRef};
use crate::session::Server;

/// Nodes listed by a browse, at most (a large server stays readable).
const MAX_NODES: usize = 400;

/// Connects with `dev`'s settings; browses `depth` levels below Objects
/// (when `browse`) and reads `read` (a node id, `nsu=` accepted).
pub async fn probe(
    dev: OpcUaDevice,
    browse: bool,
    depth: usize,
    read: Option<String>,
) -> Result<String, ProbeError> {
    crate::validate(&dev).map_err(|e| ProbeError::new(Failure::Usage, e.to_string()))?;
    let hp =
        crate::endpoint_host_port(&dev.endpoint).map_err(|e| ProbeError::new(Failure::Usage, e))?;
    // a closed port is named as such before OPC UA's own words for it
    adapter_api::probe::tcp_connect(&hp, dev.timeout_ms).await?;
    let ms = dev.timeout_ms;
    let mut server = Server {
        items: Items::new(
            vec![NodeRef {
                ns: Namespace::Index(0),
                id: "i=2258".into(),
            }],
            60_000,
        ),
        dev,
    };
    // the connection's failure says its kind (from the server's status)
    let live = server.connect().await?;
    let session = live.session();
    let mut out = format!(
        "{} answered: session open (security {:?})\n",
        server.dev.endpoint, server.dev.security
    );
    let namespaces = server
        .namespaces(&session)
        .await
        // the session is open: the server answered, with an error
        .map_err(|e| ProbeError::new(Failure::Device, e))?;
    out += "namespaces:\n";
    for (i, n) in namespaces.iter().enumerate() {
        out += &format!("  ns={i} {n}\n");
    }
    if browse {
        out += "Objects:\n";
        let mut level = vec![(NodeId::new(0, 85u32), 1usize)];
        let mut listed = 0;
        while let Some((node, d)) = level.pop() {
            let desc = BrowseDescription {
                node_id: node,
                browse_direction: BrowseDirection::Forward,
                reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
                include_subtypes: true,
                node_class_mask: 0,
                result_mask: 0x3f,
            };
            let results = within(ms, "browse", session.browse(&[desc], 1000, None))
                .await
                .map_err(|e| ProbeError::new(Failure::Timeout, e))?
                .map_err(|e| ProbeError::new(Failure::Device, format!("browse: {e}")))?;
            let mut children = Vec::new();
            for r in results
                .into_iter()
                .flat_map(|r| r.references.unwrap_or_default())
            {
                if r.node_id.node_id.namespace == 0
                    && d == 1
                    && r.browse_name.name.as_ref() == "Server"
                {
                    continue; // the server's own diagnostics: thousands of nodes
                }
                listed += 1;
                if listed > MAX_NODES {
                    out +=
                        &format!("  ... more than {MAX_NODES} nodes; browse deeper with --read\n");
                    return Ok(out);
                }
                out += &format!(
                    "{}{} ({:?}) {}\n",
                    "  ".repeat(d),
                    r.display_name.text,
                    r.node_class,
                    r.node_id.node_id
                );
                if d < depth && matches!(r.node_class, NodeClass::Object) {
                    children.push((r.node_id.node_id.clone(), d + 1));
                }
            }
            level.extend(children.into_iter().rev());
        }
    }
    if let Some(id) = read {
        let node = crate::items::parse_node(&id)
            .map_err(|e| ProbeError::new(Failure::Usage, format!("--read {id}: {e}")))?;
        let text = node
            .resolve(&namespaces)
            .map_err(|e| ProbeError::new(Failure::Usage, e))?;
        let node_id: NodeId = text
            .parse()
            .map_err(|_| ProbeError::new(Failure::Device, format!("--read {id}: not a node id")))?;
        let rv = ReadValueId {
            node_id,
            attribute_id: AttributeId::Value as u32,
            ..Default::default()
        };
        let v = within(
            ms,
            "read",
            session.read(&[rv], TimestampsToReturn::Both, 0.0),
        )
        .await
        .map_err(|e| ProbeError::new(Failure::Timeout, e))?
        .map_err(|e| ProbeError::new(Failure::Device, format!("read {id}: {e}")))?;
        let d = v.into_iter().next().unwrap_or_default();
        let status = d.status.unwrap_or_default();
        if !status.is_good() {
            return Err(ProbeError::new(
                Failure::Device,
                format!("read {id}: the server answered {status}"),
            ));
        }
        out += &format!(
            "{id} = {:?} (status {status}, source time {:?})\n",
            d.value.unwrap_or_default(),
            d.source_timestamp
        );
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), session.disconnect()).await;
    Ok(out)
}
