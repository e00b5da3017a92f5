//! A reading's quality.

use std::fmt;

use tankwatch_proto::v1;

use super::Unknown;

/// How far a reading can be trusted: the one type for a reading's quality
/// in the headend, from the agent's message to the REST answer. SQL
/// forms: 1 good, 2 uncertain, 3 bad (the proto's numbers) in the
/// `readings` table, where every byte of a row counts; the text `good`,
/// `uncertain`, `bad` in `latest_values` (one row per point) and on REST.
/// Either way an unknown stored value fails the read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quality {
    Good,
    Uncertain,
    Bad,
}

impl Quality {
    /// From the agent's message. A quality the agent did not set (or one
    /// this headend does not know) vouches for nothing: bad.
    pub fn from_proto(q: i32) -> Quality {
        match v1::Quality::try_from(q) {
            Ok(v1::Quality::Good) => Quality::Good,
            Ok(v1::Quality::Uncertain) => Quality::Uncertain,
            _ => Quality::Bad,
        }
    }

    pub fn sql(self) -> i16 {
        match self {
            Quality::Good => 1,
            Quality::Uncertain => 2,
            Quality::Bad => 3,
        }
    }

    pub fn from_sql(v: i64) -> Result<Quality, Unknown> {
        match v {
            1 => Ok(Quality::Good),
            2 => Ok(Quality::Uncertain),
            3 => Ok(Quality::Bad),
            other => Err(Unknown {
                what: "reading quality",
                value: other.to_string(),
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Uncertain => "uncertain",
            Quality::Bad => "bad",
        }
    }
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Quality {
    type Err = Unknown;
    fn from_str(s: &str) -> Result<Quality, Unknown> {
        match s {
            "good" => Ok(Quality::Good),
            "uncertain" => Ok(Quality::Uncertain),
            "bad" => Ok(Quality::Bad),
            other => Err(Unknown {
                what: "reading quality",
                value: other.into(),
            }),
        }
    }
}

/// Read from SQL in the text form (`latest_values.quality`): an unknown
/// text fails the read, naming the column and the value. No `Encode`: a
/// quality is bound as [`Quality::sql`] or [`Quality::as_str`], so that
/// the numeric `readings` column never gets the text form by mistake.
impl sqlx::Type<sqlx::Any> for Quality {
    fn type_info() -> sqlx::any::AnyTypeInfo {
        <str as sqlx::Type<sqlx::Any>>::type_info()
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Any> for Quality {
    fn decode(
        v: <sqlx::Any as sqlx::Database>::ValueRef<'r>,
    ) -> Result<Self, sqlx::error::BoxDynError> {
        let s = <&str as sqlx::Decode<'r, sqlx::Any>>::decode(v)?;
        Ok(s.parse::<Quality>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_round_trips_its_sql_and_text_forms_and_refuses_unknown_ones() {
        for q in [Quality::Good, Quality::Uncertain, Quality::Bad] {
            assert_eq!(Quality::from_sql(q.sql().into()), Ok(q));
            assert_eq!(q.as_str().parse::<Quality>(), Ok(q));
        }
        assert!(Quality::from_sql(0).is_err());
        assert!(Quality::from_sql(4).is_err());
        assert!("Good".parse::<Quality>().is_err());
        assert_eq!(Quality::from_proto(0), Quality::Bad);
        assert_eq!(Quality::from_proto(99), Quality::Bad);
        assert_eq!(Quality::from_proto(2), Quality::Uncertain);
    }
}
