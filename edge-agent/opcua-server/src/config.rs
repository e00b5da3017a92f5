//! `opcua_server:` in the agent's YAML. Absent: no server, and the agent
//! listens nowhere on the network.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

/// The server's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on. Default `0.0.0.0:4840` (the OPC UA port).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Host name in the endpoint URLs and in the server certificate: what
    /// clients dial. Default: this machine's host name.
    #[serde(default)]
    pub host_name: Option<String>,
    /// Security offered, strongest first. Default
    /// `[basic256sha256_sign_and_encrypt, basic256sha256_sign]`. `none`
    /// is offered only when listed, and then anonymous and read-only.
    #[serde(default = "default_security")]
    pub security: Vec<Security>,
    /// Who may log in (user name and password, over a secure channel).
    #[serde(default)]
    pub users: Vec<User>,
    /// The server's certificate store: `own/cert.der` and
    /// `private/private.pem` (made on first start and kept), client
    /// certificates to trust in `trusted/`, refused ones land in
    /// `rejected/` (move one to `trusted/` to admit it). Relative to the
    /// config file. Default `opcua-server-pki`.
    #[serde(default = "default_pki_dir")]
    pub pki_dir: PathBuf,
    /// Most sessions at once. 1 to 100. Default 10.
    #[serde(default = "default_max_sessions", deserialize_with = "max_sessions")]
    pub max_sessions: u64,
    /// Most TCP connections at once, logged in or not. More than
    /// `max_sessions`, up to 1,000. Default 64. At the cap a new connection
    /// ends the oldest one that has not logged in (a client past its login
    /// is never pushed out); when all have, the new one is closed.
    #[serde(
        default = "default_max_connections",
        deserialize_with = "max_connections"
    )]
    pub max_connections: u64,
    /// Shortest sampling / publishing interval a client may ask for, ms.
    /// 10 to 10,000. Default 100.
    #[serde(default = "default_min_interval", deserialize_with = "min_interval")]
    pub min_interval_ms: u64,
}

/// A security policy and mode offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    Basic256sha256SignAndEncrypt,
    Basic256sha256Sign,
    Aes256sha256rsapssSignAndEncrypt,
    Aes256sha256rsapssSign,
    /// No signing, no encryption: anonymous and read-only.
    None,
}

impl Security {
    pub fn as_str(self) -> &'static str {
        match self {
            Security::Basic256sha256SignAndEncrypt => "basic256sha256_sign_and_encrypt",
            Security::Basic256sha256Sign => "basic256sha256_sign",
            Security::Aes256sha256rsapssSignAndEncrypt => "aes256sha256rsapss_sign_and_encrypt",
            Security::Aes256sha256rsapssSign => "aes256sha256rsapss_sign",
            Security::None => "none",
        }
    }
}

/// A user of the server.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    /// An argon2 PHC string, made by `edge-agent opcua-password` (the
    /// password itself is never in the file).
    pub password_hash: String,
    pub role: Role,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Browse, read, subscribe.
    ReadOnly,
    /// And write setpoints (through the agent's limits).
    ReadWrite,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 4840))
}
fn default_security() -> Vec<Security> {
    vec![
        Security::Basic256sha256SignAndEncrypt,
        Security::Basic256sha256Sign,
    ]
}
fn default_pki_dir() -> PathBuf {
    PathBuf::from("opcua-server-pki")
}
fn default_max_sessions() -> u64 {
    10
}
fn default_max_connections() -> u64 {
    64
}
fn max_connections<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    adapter_api::bounded_u64(d, "max_connections", 2, 1_000)
}
fn default_min_interval() -> u64 {
    100
}
fn max_sessions<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    adapter_api::bounded_u64(d, "max_sessions", 1, 100)
}
fn min_interval<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    adapter_api::bounded_u64(d, "min_interval_ms", 10, 10_000)
}

/// A problem with the section, naming the key and its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("opcua_server.{key}: {msg}")]
pub struct ConfigProblem {
    /// The YAML key at fault (for the line number).
    pub key: &'static str,
    /// Its value as written, when there is one.
    pub value: String,
    pub msg: String,
}

impl ServerConfig {
    /// Checks what serde cannot: names, hashes, an empty or duplicate list.
    pub fn validate(&self) -> Result<(), ConfigProblem> {
        let problem = |key, value: &str, msg: String| ConfigProblem {
            key,
            value: value.to_string(),
            msg,
        };
        if self.security.is_empty() {
            return Err(problem(
                "security",
                "",
                "offers nothing; list at least basic256sha256_sign_and_encrypt".into(),
            ));
        }
        for (i, s) in self.security.iter().enumerate() {
            if self.security[..i].contains(s) {
                return Err(problem(
                    "security",
                    s.as_str(),
                    format!("{} is listed twice", s.as_str()),
                ));
            }
        }
        if let Some(h) = &self.host_name
            && (h.is_empty()
                || h.len() > 253
                || h.chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '/'))
        {
            return Err(problem("host_name", h, format!("{h:?} is not a host name")));
        }
        if self.max_connections <= self.max_sessions {
            return Err(problem(
                "max_connections",
                &self.max_connections.to_string(),
                format!(
                    "must be more than max_sessions ({}): room for clients on their way to a login",
                    self.max_sessions
                ),
            ));
        }
        let secure = self.security.iter().any(|s| *s != Security::None);
        if secure && self.users.is_empty() {
            return Err(problem(
                "users",
                "",
                "no user can log in on the secure endpoints; add one with a hash from `edge-agent opcua-password`".into(),
            ));
        }
        for (i, u) in self.users.iter().enumerate() {
            if u.name.is_empty()
                || u.name.chars().count() > 64
                || u.name.chars().any(|c| c.is_control() || c == ':')
            {
                return Err(problem(
                    "name",
                    &u.name,
                    format!(
                        "user {:?}: 1 to 64 characters, no ':' or control characters",
                        u.name
                    ),
                ));
            }
            if self.users[..i].iter().any(|o| o.name == u.name) {
                return Err(problem(
                    "name",
                    &u.name,
                    format!("user {:?} is listed twice", u.name),
                ));
            }
            if argon2::password_hash::PasswordHash::new(&u.password_hash).is_err()
                || !u.password_hash.starts_with("$argon2")
            {
                return Err(problem(
                    "password_hash",
                    &u.password_hash,
                    format!(
                        "user {:?}: not an argon2 hash; make one with `edge-agent opcua-password`",
                        u.name
                    ),
                ));
            }
            if let Err(msg) = crate::auth::hash_cost_ok(&u.password_hash) {
                return Err(problem(
                    "password_hash",
                    &u.password_hash,
                    format!("user {:?}: {msg}", u.name),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$2Vg3o5e4bCqaM9tS6m5jI2cSCuhwJ2HwFz1cQWQxM5k";

    fn parse(y: &str) -> Result<ServerConfig, String> {
        let c: ServerConfig = serde_yaml::from_str(y).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn defaults_are_secure_and_none_is_offered_only_when_listed() {
        let c = parse(&format!(
            "users: [{{ name: scada, password_hash: '{HASH}', role: read_write }}]"
        ))
        .unwrap();
        assert_eq!(c.listen.port(), 4840);
        assert_eq!(c.security, default_security());
        assert!(!c.security.contains(&Security::None));
        let c = parse("security: [none]").unwrap();
        assert_eq!(c.security, vec![Security::None]);
    }

    #[test]
    fn bad_sections_are_refused_naming_the_key() {
        for (y, want) in [
            ("{}", "opcua_server.users: no user can log in"),
            ("security: []", "opcua_server.security: offers nothing"),
            ("security: [none, none]", "listed twice"),
            ("security: [basic128rsa15_sign]", "unknown variant"),
            (
                "{ security: [none], users: [{ name: a, password_hash: secret, role: read_only }] }",
                "opcua_server.password_hash: user \"a\": not an argon2 hash",
            ),
            (
                &format!(
                    "{{ security: [none], users: [{{ name: 'a:b', password_hash: '{HASH}', role: read_only }}] }}"
                ),
                "opcua_server.name",
            ),
            (
                "{ security: [none], users: [{ name: a, password_hash: x, role: admin }] }",
                "unknown variant `admin`",
            ),
            ("{ security: [none], max_sessions: 0 }", "max_sessions"),
            (
                "{ security: [none], max_sessions: 20, max_connections: 20 }",
                "opcua_server.max_connections: must be more than max_sessions (20)",
            ),
            (
                "{ security: [none], users: [{ name: a, password_hash: '$argon2id$v=19$m=1048576,t=2,p=1$c2FsdHNhbHRzYWx0$2Vg3o5e4bCqaM9tS6m5jI2cSCuhwJ2HwFz1cQWQxM5k', role: read_only }] }",
                "opcua_server.password_hash: user \"a\": needs 1048576 KiB of memory per login",
            ),
            (
                "{ security: [none], host_name: 'a b' }",
                "opcua_server.host_name",
            ),
        ] {
            let e = parse(y).unwrap_err();
            assert!(e.contains(want), "{y}: {e}");
        }
    }
}
