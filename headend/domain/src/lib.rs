//! The headend's typed model. Each type parses and prints its wire and
//! SQL form, and an unknown value is an error, never a default. The pure
//! rules ([`lifecycle`], [`split`]) take the clock and the facts as input.

#![deny(clippy::too_many_lines)]

pub mod access;
pub mod actor;
pub mod alarm;
pub mod assess;
pub mod asset;
pub mod audit;
pub mod calendar;
pub mod clock;
pub mod command;
pub mod consumption;
pub mod deliveries;
pub mod enrollment;
pub mod escalation;
pub mod forecast;
pub mod ids;
pub mod inventory;
pub mod lifecycle;
pub mod load;
pub mod notify;
pub mod outbox;
pub mod quality;
pub mod secret;
pub mod signature;
pub mod split;
pub mod text;
pub mod throttle;
pub mod time;

pub use access::{Grant, Permission, Role, Scope};
pub use actor::Actor;
pub use asset::AssetKind;
pub use audit::AuditOutcome;
pub use command::{CommandKind, CommandState, Reason};
pub use ids::{AssetId, BadId, CommandId, LoadId, SiteId};
pub use load::{DeliverySource, EtaSource, LoadEventKind, LoadStatus, Timing};
pub use quality::Quality;
pub use tankwatch_proto::v1::AckReason;
pub use time::UnixMs;

/// A closed set of values with one text form ([`text_enum!`]'s types), for
/// code that parses any of them (a REST filter naming its choices).
pub trait TextEnum: std::str::FromStr + Copy {
    /// The text forms, for error messages (`a, b, c`).
    fn choices() -> String;
}

/// An unknown wire or SQL value of a typed field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: unknown value {value:?}")]
pub struct Unknown {
    pub what: &'static str,
    pub value: String,
}

/// A closed set of values with one text form (wire, SQL and REST):
/// `as_str`, `Display`, `FromStr` (unknown text is an error), `ALL`, and
/// the SQL codec for sqlx's `Any` driver (so a stored value this build
/// does not know fails the read instead of becoming a default).
macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident, $what:literal { $($(#[$vm:meta])* $v:ident => $t:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vm])* $v),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$v),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $t),+ }
            }

            /// The text forms, for error messages (`a, b, c`).
            pub fn choices() -> String {
                Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl $crate::TextEnum for $name {
            fn choices() -> String {
                $name::choices()
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::Unknown;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($t => Ok($name::$v),)+
                    other => Err($crate::Unknown { what: $what, value: other.into() }),
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        // stored JSON (a command's ETA payload) reads the same text; an
        // unknown value fails the read
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        $crate::sql_text!($name);
    };
}
pub(crate) use text_enum;

/// The SQL codec of a type with a text form (`Display` + `FromStr`) for
/// sqlx's `Any` driver: stored as text; a value that does not parse fails
/// the read.
macro_rules! sql_text {
    ($name:ty) => {
        impl sqlx::Type<sqlx::Any> for $name {
            fn type_info() -> sqlx::any::AnyTypeInfo {
                <str as sqlx::Type<sqlx::Any>>::type_info()
            }
        }

        impl<'q> sqlx::Encode<'q, sqlx::Any> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut <sqlx::Any as sqlx::Database>::ArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <String as sqlx::Encode<'q, sqlx::Any>>::encode(self.to_string(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Any> for $name {
            fn decode(
                v: <sqlx::Any as sqlx::Database>::ValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let s = <&str as sqlx::Decode<'r, sqlx::Any>>::decode(v)?;
                Ok(s.parse::<$name>()?)
            }
        }
    };
}
pub(crate) use sql_text;

#[cfg(test)]
pub(crate) fn round_trips<T>(all: &[T])
where
    T: Copy + std::fmt::Debug + PartialEq + std::fmt::Display + std::str::FromStr,
    T::Err: std::fmt::Debug,
{
    for v in all {
        assert_eq!(v.to_string().parse::<T>().ok(), Some(*v), "{v}");
    }
    assert!("".parse::<T>().is_err());
    assert!("SOME_FUTURE_VALUE".parse::<T>().is_err());
}
