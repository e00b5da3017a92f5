//! Who or what caused a change: recorded on every command and load
//! timeline entry (and, with operator access, on every audit entry).

use std::fmt;
use std::net::IpAddr;

use super::Unknown;

/// Who or what caused a change. Text form (SQL, REST):
/// `operator NAME from IP`, `api_key ID from IP`, `agent SITE`,
/// `opcua_user NAME at SITE`, `headend` or `headend: TASK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A person through the REST API.
    Operator { name: String, from: IpAddr },
    /// An integration through the REST API, by its key's id.
    ApiKey { id: String, from: IpAddr },
    /// A site's agent (its certificate's site id).
    Agent { site: String },
    /// A user of the agent's OPC UA server who wrote a setpoint at the
    /// site (a locally originated command), as that site's agent said.
    OpcUaUser { user: String, site: String },
    /// The headend itself: a sweeper, or a session's dispatcher.
    Headend { task: Option<String> },
}

impl Actor {
    pub fn headend() -> Actor {
        Actor::Headend { task: None }
    }

    pub fn agent(site: &str) -> Actor {
        Actor::Agent { site: site.into() }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Operator { name, from } => write!(f, "operator {name} from {from}"),
            Actor::ApiKey { id, from } => write!(f, "api_key {id} from {from}"),
            Actor::Agent { site } => write!(f, "agent {site}"),
            Actor::OpcUaUser { user, site } => write!(f, "opcua_user {user} at {site}"),
            Actor::Headend { task: None } => f.write_str("headend"),
            Actor::Headend { task: Some(t) } => write!(f, "headend: {t}"),
        }
    }
}

impl std::str::FromStr for Actor {
    type Err = Unknown;
    fn from_str(s: &str) -> Result<Actor, Unknown> {
        let unknown = || Unknown {
            what: "actor",
            value: s.into(),
        };
        let who_from = |rest: &str| -> Result<(String, IpAddr), Unknown> {
            let (who, ip) = rest.rsplit_once(" from ").ok_or_else(unknown)?;
            let ip = ip.parse().map_err(|_| unknown())?;
            if who.is_empty() {
                return Err(unknown());
            }
            Ok((who.to_string(), ip))
        };
        if let Some(rest) = s.strip_prefix("operator ") {
            let (name, from) = who_from(rest)?;
            Ok(Actor::Operator { name, from })
        } else if let Some(rest) = s.strip_prefix("api_key ") {
            let (id, from) = who_from(rest)?;
            Ok(Actor::ApiKey { id, from })
        } else if let Some(rest) = s.strip_prefix("opcua_user ") {
            // a site id has no spaces; a user name may
            let (user, site) = rest.rsplit_once(" at ").ok_or_else(unknown)?;
            if user.is_empty() || site.is_empty() || site.contains(' ') {
                return Err(unknown());
            }
            Ok(Actor::OpcUaUser {
                user: user.into(),
                site: site.into(),
            })
        } else if let Some(site) = s.strip_prefix("agent ").filter(|x| !x.is_empty()) {
            Ok(Actor::agent(site))
        } else if s == "headend" {
            Ok(Actor::headend())
        } else if let Some(t) = s.strip_prefix("headend: ").filter(|x| !x.is_empty()) {
            Ok(Actor::Headend {
                task: Some(t.into()),
            })
        } else {
            Err(unknown())
        }
    }
}

impl serde::Serialize for Actor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

super::sql_text!(Actor);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_round_trip_their_text_and_unknown_forms_are_errors() {
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        for a in [
            Actor::Operator {
                name: "ann".into(),
                from: ip,
            },
            Actor::Operator {
                name: "ann from sales".into(),
                from: v6,
            },
            Actor::ApiKey {
                id: "k1".into(),
                from: ip,
            },
            Actor::agent("site-1"),
            Actor::OpcUaUser {
                user: "scada at night".into(),
                site: "site-1".into(),
            },
            Actor::headend(),
            Actor::Headend {
                task: Some("session from 10.0.0.7:5000".into()),
            },
        ] {
            assert_eq!(a.to_string().parse::<Actor>(), Ok(a.clone()), "{a}");
        }
        for bad in [
            "",
            "anonymous",
            "operator ann",
            "operator ann from nowhere",
            "operator  from 10.0.0.1",
            "agent ",
            "opcua_user alice",
            "opcua_user  at site-1",
            "opcua_user alice at ",
            "headend: ",
            "Headend",
        ] {
            assert!(bad.parse::<Actor>().is_err(), "{bad:?}");
        }
    }
}
