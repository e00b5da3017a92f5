//! The ids of the headend's aggregates: a site, an asset, a command, a
//! load. Each is checked once, where it enters (a certificate, a REST path
//! or body, a stored row), and is a type from there on: a function that
//! takes a [`SiteId`] cannot be handed a load id or an unchecked string.
//! They read as `&str` (`Deref`) for SQL binds and formatting.

use std::fmt;

/// Why a text is not an id of its kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?}: {rule}")]
pub struct BadId {
    pub what: &'static str,
    /// The text, cut to 80 characters.
    pub value: String,
    pub rule: &'static str,
}

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident, $what:literal, $rule:literal, $ok:expr) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        /// As the string (`"site-a"`): messages quote ids with `{:?}`.
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl $name {
            /// What the id must look like, for an error message.
            pub const RULE: &'static str = $rule;

            /// Checks `s`; the error names the kind of id and the rule.
            pub fn parse(s: &str) -> Result<$name, BadId> {
                let ok: fn(&str) -> bool = $ok;
                if ok(s) {
                    Ok($name(s.to_string()))
                } else {
                    Err(BadId {
                        what: $what,
                        value: s.chars().take(80).collect(),
                        rule: $rule,
                    })
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = BadId;
            fn from_str(s: &str) -> Result<$name, BadId> {
                $name::parse(s)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                $name::parse(&s).map_err(serde::de::Error::custom)
            }
        }

        crate::sql_text!($name);
    };
}

fn ascii_id(s: &str, max: usize, extra: &[u8]) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

id_type!(
    /// A site: 1-63 characters of lowercase ASCII letters, digits, `-`
    /// and `_`, starting with a letter or digit; the same rule as the
    /// agent certificate's name (`tankwatch_tls::validate_site_id`, a test
    /// holds the two together).
    SiteId,
    "site id",
    "use 1-63 characters of lowercase letters, digits, '-' or '_', starting with a letter or digit",
    |s| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
            })
            && s.as_bytes()[0].is_ascii_alphanumeric()
    }
);

id_type!(
    /// An asset of a site, as the agent's configuration names it: 1-64
    /// ASCII letters, digits, `-`, `_` or `.` (the agent's own rule,
    /// `adapter_api::validate::ident`).
    AssetId,
    "asset id",
    "use 1-64 characters of ASCII letters, digits, '-', '_' or '.'",
    |s| ascii_id(s, 64, b"-_.")
);

id_type!(
    /// A command (`cmd-` and 16 hex digits when the headend makes it).
    CommandId,
    "command id",
    "use 1-64 characters of ASCII letters, digits, '-' or '_'",
    |s| ascii_id(s, 64, b"-_")
);

id_type!(
    /// A load (`load-` and 16 hex digits when the headend makes it).
    LoadId,
    "load id",
    "use 1-64 characters of ASCII letters, digits, '-' or '_'",
    |s| ascii_id(s, 64, b"-_")
);

impl CommandId {
    /// The id of a new command: `cmd-` and 16 hex digits of `n`.
    pub fn generated(n: u64) -> CommandId {
        CommandId(format!("cmd-{n:016x}"))
    }
}

impl LoadId {
    /// The id of a new load: `load-` and 16 hex digits of `n`.
    pub fn generated(n: u64) -> LoadId {
        LoadId(format!("load-{n:016x}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_id_takes_its_own_form_and_names_the_rule_it_breaks() {
        for ok in ["site-a", "s1", "0_x", &"a".repeat(63)] {
            assert!(SiteId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Site", "-a", "a b", "a/b", "ä", &"a".repeat(64), "a\0"] {
            let e = SiteId::parse(bad).unwrap_err();
            assert_eq!(e.what, "site id");
            assert!(e.to_string().contains("lowercase"), "{e}");
        }
        assert!(AssetId::parse("Tank-1.main").is_ok());
        assert!(AssetId::parse("tank 1").is_err());
        assert!(AssetId::parse(&"t".repeat(65)).is_err());
        assert!(CommandId::parse("cmd-00ff00ff00ff00ff").is_ok());
        assert!(CommandId::parse("cmd.1").is_err());
        assert!(LoadId::parse("load-1").is_ok());
        assert!(LoadId::parse("").is_err());
        // what the headend makes passes its own check
        assert!(CommandId::parse(&CommandId::generated(u64::MAX)).is_ok());
        assert!(LoadId::parse(&LoadId::generated(7)).is_ok());
        // a long bad value is cut in the message
        let e = LoadId::parse(&"x/".repeat(100)).unwrap_err();
        assert_eq!(e.value.chars().count(), 80);
    }

    #[test]
    fn ids_read_from_json_only_in_their_form_and_print_as_plain_strings() {
        let s: SiteId = serde_json::from_str("\"site-a\"").unwrap();
        assert_eq!(s, "site-a");
        // quoted in messages as the text it is
        assert_eq!(format!("no site {s:?}"), "no site \"site-a\"");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"site-a\"");
        let e = serde_json::from_str::<SiteId>("\"Site A\"").unwrap_err();
        assert!(e.to_string().contains("site id"), "{e}");
        assert!(serde_json::from_str::<LoadId>("7").is_err());
    }
}
