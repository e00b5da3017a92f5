//! JSON columns read as types: text that does not parse as what the
//! column holds is corruption, reported with the column and the row's key
//! ([`Error::Corrupt`], REST code `stored_value_invalid`), never read as a
//! default (an ETA sent as `eta_ms 0` with no tanks, "nothing writable").

use serde::de::DeserializeOwned;

use crate::Error;

/// `text` of `column` (as `table.column`) in the row `key`, as a `T`.
pub fn parse<T: DeserializeOwned>(column: &'static str, key: &str, text: &str) -> Result<T, Error> {
    serde_json::from_str(text).map_err(|e| corrupt(column, key, e.to_string()))
}

/// A stored document read as a `T` (an ETA payload): a document that is
/// not one is corruption.
pub fn from_document<T: DeserializeOwned>(
    column: &'static str,
    key: &str,
    d: &Document,
) -> Result<T, Error> {
    serde_json::from_value(d.0.0.clone()).map_err(|e| corrupt(column, key, e.to_string()))
}

/// A JSON object or array (any JSON but a bare scalar where a document is
/// kept: a summary, a context, a payload).
pub fn document(column: &'static str, key: &str, text: &str) -> Result<serde_json::Value, Error> {
    let v: serde_json::Value = parse(column, key, text)?;
    if v.is_object() || v.is_array() {
        Ok(v)
    } else {
        Err(corrupt(
            column,
            key,
            format!("{v} is not an object or array"),
        ))
    }
}

/// The corruption error, logged where it is found (with the stable code).
pub fn corrupt(column: &'static str, key: &str, detail: String) -> Error {
    tracing::error!(code = "stored_value_invalid", column, key, %detail, "a stored value does not parse; refused");
    Error::Corrupt {
        column,
        key: key.to_string(),
        detail,
    }
}

/// A JSON column as its type `T` in a row: text that does not parse as a
/// `T` fails the read (sqlx's `ColumnDecode`, REST `stored_value_invalid`
/// naming the column), as a stored enum value this build does not know
/// does. Written back as its JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonText<T>(pub T);

/// A stored JSON document (an object or an array: summaries, contexts,
/// payloads, details).
pub type Document = JsonText<Doc>;

/// A JSON object or array; a bare scalar or a parse failure is corruption.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(transparent)]
pub struct Doc(pub serde_json::Value);

impl<'de> serde::Deserialize<'de> for Doc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        if v.is_object() || v.is_array() {
            Ok(Doc(v))
        } else {
            Err(serde::de::Error::custom(format!(
                "{v} is not a JSON object or array"
            )))
        }
    }
}

impl<T> std::ops::Deref for JsonText<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: serde::Serialize> serde::Serialize for JsonText<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<T> sqlx::Type<sqlx::Any> for JsonText<T> {
    fn type_info() -> sqlx::any::AnyTypeInfo {
        <str as sqlx::Type<sqlx::Any>>::type_info()
    }
}

impl<'q, T: serde::Serialize> sqlx::Encode<'q, sqlx::Any> for JsonText<T> {
    fn encode_by_ref(
        &self,
        buf: &mut <sqlx::Any as sqlx::Database>::ArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <String as sqlx::Encode<'q, sqlx::Any>>::encode(serde_json::to_string(&self.0)?, buf)
    }
}

impl<'r, T: DeserializeOwned> sqlx::Decode<'r, sqlx::Any> for JsonText<T> {
    fn decode(
        v: <sqlx::Any as sqlx::Database>::ValueRef<'r>,
    ) -> Result<Self, sqlx::error::BoxDynError> {
        let s = <&str as sqlx::Decode<'r, sqlx::Any>>::decode(v)?;
        Ok(JsonText(serde_json::from_str(s)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_is_an_object_or_an_array_and_nothing_else() {
        assert!(serde_json::from_str::<Doc>("{\"a\": 1}").is_ok());
        assert!(serde_json::from_str::<Doc>("[]").is_ok());
        for bad in ["", "nul", "3", "\"text\"", "null", "{\"a\":"] {
            assert!(serde_json::from_str::<Doc>(bad).is_err(), "{bad:?}");
        }
        let e = document("escalations.context", "esc-1", "{").unwrap_err();
        assert!(e.to_string().contains("escalations.context"), "{e}");
        assert!(e.to_string().contains("esc-1"), "{e}");
    }
}
