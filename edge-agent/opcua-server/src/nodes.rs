//! The node manager: the plan's folders and variables in the agent's
//! namespace, and writes handed to the agent's write service.
//!
//! A write is checked here (the node is a writable setpoint, the user's
//! access level has the write bit, the channel is secure, the value is a
//! finite number) and then waits, outside every address-space lock, for
//! the agent's answer: the same path as a headend command. Its status
//! says the outcome (`WriteResult::status`).

use std::collections::HashMap;

use opcua::server::address_space::{AccessLevel, AddressSpace, ObjectBuilder, VariableBuilder};
use opcua::server::diagnostics::NamespaceMetadata;
use opcua::server::node_manager::memory::InMemoryNodeManagerImpl;
use opcua::server::node_manager::{RequestContext, ServerContext, WriteNode};
use opcua::sync::RwLock;
use opcua::types::{
    AttributeId, DataTypeId, DataValue, DateTime, EUInformation, ExtensionObject, LocalizedText,
    MessageSecurityMode, NodeId, ObjectId, ObjectTypeId, QualifiedName, Range, StatusCode,
    UAString, VariableTypeId, Variant,
};

use crate::model::{Folder, Plan, Type, Var};
use crate::{WriteCall, Writer, auth};

/// The OPC UA namespace of units (UNECE codes).
const UNITS_NS: &str = "http://www.opcfoundation.org/UA/units/un/cefact";

pub struct AgentNodes {
    namespace: NamespaceMetadata,
    writable: HashMap<NodeId, (String, String)>,
    /// Every reading variable's point (a refused write names it).
    points: HashMap<NodeId, (String, String)>,
    writer: Writer,
}

impl AgentNodes {
    pub fn new(
        ns_uri: &str,
        context: &ServerContext,
        space: &mut AddressSpace,
        plan: &Plan,
        writer: Writer,
    ) -> AgentNodes {
        let ns = context
            .type_tree
            .write()
            .namespaces_mut()
            .add_namespace(ns_uri);
        space.add_namespace(ns_uri, ns);
        for f in &plan.folders {
            add_folder(space, ns, f);
        }
        let mut writable = HashMap::new();
        let mut points = HashMap::new();
        for v in &plan.vars {
            add_var(space, ns, v);
            if let crate::model::Source::Reading { asset, field } = &v.source {
                points.insert(node(ns, &v.id), (asset.clone(), field.clone()));
                if v.writable {
                    writable.insert(node(ns, &v.id), (asset.clone(), field.clone()));
                }
            }
        }
        AgentNodes {
            namespace: NamespaceMetadata {
                namespace_uri: ns_uri.to_string(),
                namespace_index: ns,
                ..Default::default()
            },
            writable,
            points,
            writer,
        }
    }
}

pub fn node(ns: u16, id: &str) -> NodeId {
    NodeId::new(ns, id.to_string())
}

pub fn add_folder(space: &mut AddressSpace, ns: u16, f: &Folder) {
    let parent = match &f.parent {
        Some(p) => node(ns, p),
        None => ObjectId::ObjectsFolder.into(),
    };
    ObjectBuilder::new(
        &node(ns, &f.id),
        QualifiedName::new(ns, f.name.as_str()),
        f.display.as_str(),
    )
    .has_type_definition(ObjectTypeId::FolderType)
    .organized_by(parent)
    .insert(space);
}

fn data_type(t: Type) -> DataTypeId {
    match t {
        Type::Double => DataTypeId::Double,
        Type::Boolean => DataTypeId::Boolean,
        Type::String => DataTypeId::String,
        Type::DateTime => DataTypeId::DateTime,
        Type::UInt64 => DataTypeId::UInt64,
    }
}

/// The value a variable shows before anything is known.
fn initial(v: &Var) -> DataValue {
    use crate::model::{Fixed, Source};
    let now = DateTime::now();
    let value = match &v.source {
        Source::Fixed(Fixed::Text(t)) => Variant::from(t.as_str()),
        Source::Fixed(Fixed::Number(n)) => Variant::from(*n),
        _ => {
            return DataValue {
                value: Some(empty(v.ty)),
                status: Some(StatusCode::BadWaitingForInitialData),
                source_timestamp: Some(now),
                server_timestamp: Some(now),
                ..Default::default()
            };
        }
    };
    DataValue {
        value: Some(value),
        status: Some(StatusCode::Good),
        source_timestamp: Some(now),
        server_timestamp: Some(now),
        ..Default::default()
    }
}

/// A typed empty value (so a client sees the variable's type at once).
pub fn empty(t: Type) -> Variant {
    match t {
        Type::Double => Variant::from(0.0f64),
        Type::Boolean => Variant::from(false),
        Type::String => Variant::from(""),
        Type::DateTime => Variant::from(DateTime::null()),
        Type::UInt64 => Variant::from(0u64),
    }
}

pub fn add_var(space: &mut AddressSpace, ns: u16, v: &Var) {
    let id = node(ns, &v.id);
    let level = if v.writable {
        AccessLevel::CURRENT_READ | AccessLevel::CURRENT_WRITE
    } else {
        AccessLevel::CURRENT_READ
    };
    let analog = v.ty == Type::Double && (v.unit.is_some() || v.range.is_some());
    VariableBuilder::new(
        &id,
        QualifiedName::new(ns, v.name.as_str()),
        v.name.as_str(),
    )
    .data_type(data_type(v.ty))
    .value(empty(v.ty))
    .access_level(level)
    .user_access_level(level)
    .has_type_definition(if analog {
        VariableTypeId::AnalogItemType
    } else {
        VariableTypeId::BaseDataVariableType
    })
    .organized_by(node(ns, &v.parent))
    .insert(space);
    if let Some(opcua::server::address_space::NodeType::Variable(var)) = space.find_mut(&id) {
        var.set_data_value(initial(v));
    }
    if let Some(u) = v.unit {
        let eu = EUInformation {
            namespace_uri: UAString::from(UNITS_NS),
            unit_id: u.unit_id(),
            display_name: LocalizedText::new("", u.display),
            description: LocalizedText::new("", u.description),
        };
        property(
            space,
            ns,
            &v.id,
            "EngineeringUnits",
            DataTypeId::EUInformation,
            Variant::from(ExtensionObject::from_message(eu)),
        );
    }
    if let Some((low, high)) = v.range {
        property(
            space,
            ns,
            &v.id,
            "EURange",
            DataTypeId::Range,
            Variant::from(ExtensionObject::from_message(Range { low, high })),
        );
    }
}

fn property(
    space: &mut AddressSpace,
    ns: u16,
    of: &str,
    name: &str,
    ty: DataTypeId,
    value: Variant,
) {
    VariableBuilder::new(
        &node(ns, &format!("{of}/{name}")),
        QualifiedName::new(0, name),
        name,
    )
    .data_type(ty)
    .value(value)
    .access_level(AccessLevel::CURRENT_READ)
    .user_access_level(AccessLevel::CURRENT_READ)
    .has_type_definition(VariableTypeId::PropertyType)
    .property_of(node(ns, of))
    .insert(space);
}

/// A written value as a number, if it is one.
fn number(v: &Variant) -> Option<f64> {
    let x = match v {
        Variant::Double(x) => *x,
        Variant::Float(x) => f64::from(*x),
        Variant::Int16(x) => f64::from(*x),
        Variant::UInt16(x) => f64::from(*x),
        Variant::Int32(x) => f64::from(*x),
        Variant::UInt32(x) => f64::from(*x),
        Variant::Int64(x) => *x as f64,
        Variant::UInt64(x) => *x as f64,
        Variant::Byte(x) => f64::from(*x),
        Variant::SByte(x) => f64::from(*x),
        _ => return None,
    };
    x.is_finite().then_some(x)
}

#[async_trait::async_trait]
impl InMemoryNodeManagerImpl for AgentNodes {
    async fn init(&self, _space: &mut AddressSpace, _context: ServerContext) {}

    fn name(&self) -> &str {
        "tankwatch-agent"
    }

    fn namespaces(&self) -> Vec<NamespaceMetadata> {
        vec![self.namespace.clone()]
    }

    async fn write(
        &self,
        context: &RequestContext,
        address_space: &RwLock<AddressSpace>,
        nodes_to_write: &mut [&mut WriteNode],
    ) -> Result<(), StatusCode> {
        let (user, client, secure) = {
            let s = context.session.read();
            (
                auth::user_name(&context.token).to_string(),
                s.application_description().application_uri.to_string(),
                s.message_security_mode() != MessageSecurityMode::None,
            )
        };
        let mut calls = Vec::new();
        {
            let space = address_space.read();
            for (i, w) in nodes_to_write.iter_mut().enumerate() {
                let v = w.value();
                let Some(n) = space.find(&v.node_id) else {
                    w.set_status(StatusCode::BadNodeIdUnknown);
                    continue;
                };
                let (asset, field) = self
                    .points
                    .get(&v.node_id)
                    .cloned()
                    .unwrap_or_else(|| (String::new(), v.node_id.to_string()));
                let refusal = if v.attribute_id != AttributeId::Value {
                    Some((
                        StatusCode::BadNotWritable,
                        "only the Value attribute is written".to_string(),
                    ))
                } else if !self.writable.contains_key(&v.node_id) {
                    Some((
                        StatusCode::BadNotWritable,
                        "not a setpoint with safety limits".to_string(),
                    ))
                } else if !opcua::server::address_space::user_access_level(context, n)
                    .contains(AccessLevel::CURRENT_WRITE)
                    || !secure
                {
                    Some((
                        StatusCode::BadUserAccessDenied,
                        format!(
                            "user {user} may not write (read-only role or an unsecured channel)"
                        ),
                    ))
                } else if v.index_range.has_range() {
                    Some((
                        StatusCode::BadWriteNotSupported,
                        "index ranges are not written".to_string(),
                    ))
                } else {
                    None
                };
                let value = v.value.value.as_ref().and_then(number);
                let refusal = refusal.or_else(|| {
                    value.is_none().then(|| {
                        (
                            StatusCode::BadTypeMismatch,
                            "the value is not a finite number".to_string(),
                        )
                    })
                });
                if let Some((status, why)) = &refusal {
                    tracing::warn!(%user, %client, point = %format!("{asset}.{field}"), %status, why,
                        "OPC UA write refused");
                    w.set_status(*status);
                }
                calls.push((
                    i,
                    WriteCall {
                        asset,
                        field,
                        value: value.unwrap_or(f64::NAN),
                        user: user.clone(),
                        client: client.clone(),
                        refused: refusal,
                    },
                ));
            }
        }
        // one at a time, in request order, without any lock held
        // (a refused one is handed over too, to be counted and recorded;
        // its status is already set)
        for (i, call) in calls {
            let what = format!("{}.{} = {}", call.asset, call.field, call.value);
            let refused = call.refused.is_some();
            let (result, detail) = (self.writer)(call).await;
            if refused {
                continue;
            }
            tracing::info!(%user, %client, write = %what, ?result, detail, "OPC UA write");
            if let Some(w) = nodes_to_write.get_mut(i) {
                w.set_status(result.status());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_finite_numbers_are_written() {
        assert_eq!(number(&Variant::from(42.5f64)), Some(42.5));
        assert_eq!(number(&Variant::from(7i32)), Some(7.0));
        assert_eq!(number(&Variant::from(f64::NAN)), None);
        assert_eq!(number(&Variant::from("42")), None);
        assert_eq!(number(&Variant::from(true)), None);
    }

    /// A delivery's nodes exist a moment before the publisher sets their
    /// values: a read in between saw `""` with status Good (an e2e flake).
    #[test]
    fn a_new_delivery_variable_waits_for_its_value_instead_of_reading_good_and_empty() {
        let (_, vars) = crate::model::delivery_vars("site-1", "load-1");
        for v in &vars {
            let d = initial(v);
            assert_eq!(
                d.status,
                Some(StatusCode::BadWaitingForInitialData),
                "{}",
                v.id
            );
        }
    }
}
