//! Pagination, the same on every list: `?limit=` (1 to the list's
//! maximum) and `?cursor=` (opaque, from the previous page). A page with
//! more after it says so in `Link: <…>; rel="next"` (RFC 8288) and
//! `X-Next-Cursor`; the body stays the JSON array of items.

use axum::Json;
use axum::http::{HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::Value;

use super::ApiError;

/// Default page size.
pub const DEFAULT_LIMIT: i64 = 100;
/// Largest page of most lists.
pub const MAX_LIMIT: i64 = 1000;

/// `?limit=&cursor=`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1 to 1000 (default 100).
    pub limit: Option<i64>,
    /// From the previous page's `X-Next-Cursor` (or its `Link` header).
    pub cursor: Option<String>,
}

impl PageParams {
    pub fn limit(&self) -> Result<i64, ApiError> {
        limit(self.limit, DEFAULT_LIMIT, MAX_LIMIT)
    }

    /// The decoded cursor (what the list keys on), if any.
    pub fn after(&self) -> Result<Option<String>, ApiError> {
        self.cursor.as_deref().map(decode).transpose()
    }

    /// A cursor of two parts split at `sep` (`SITE/TANK`).
    pub fn after_pair(&self, sep: char) -> Result<Option<(String, String)>, ApiError> {
        self.after()?
            .map(|k| {
                k.split_once(sep)
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(not_ours)
            })
            .transpose()
    }

    /// A cursor of a number and an id (`MS:ID`, lists by time then id).
    pub fn after_i64_id(&self) -> Result<Option<(i64, String)>, ApiError> {
        self.after_pair(':')?
            .map(|(n, id)| Ok((n.parse::<i64>().map_err(|_| not_ours())?, id)))
            .transpose()
    }
}

fn not_ours() -> ApiError {
    ApiError::invalid("cursor", "not a cursor this API gave out")
}

pub fn limit(v: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    let l = v.unwrap_or(default);
    if (1..=max).contains(&l) {
        Ok(l)
    } else {
        Err(ApiError::invalid(
            "limit",
            format!("must be from 1 to {max}"),
        ))
    }
}

pub fn encode(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(key.as_bytes())
}

pub fn decode(c: &str) -> Result<String, ApiError> {
    let bad = || {
        ApiError::invalid(
            "cursor",
            "not a cursor this API gave out (take it from X-Next-Cursor)",
        )
    };
    if c.len() > 512 {
        return Err(bad());
    }
    let b = URL_SAFE_NO_PAD.decode(c).map_err(|_| bad())?;
    String::from_utf8(b).map_err(|_| bad())
}

/// The list's cursor part as an i64 key.
pub fn after_i64(p: &PageParams) -> Result<Option<i64>, ApiError> {
    p.after()?
        .map(|k| k.parse::<i64>().map_err(|_| not_ours()))
        .transpose()
}

/// A page: the items (at most `limit`; one more was fetched to know if
/// there is a next page), and the cursor of the next page from the last
/// item's key.
pub fn respond(
    uri: &Uri,
    mut items: Vec<Value>,
    limit: i64,
    key: impl Fn(&Value) -> String,
) -> Response {
    let more = items.len() as i64 > limit;
    items.truncate(limit.max(0) as usize);
    let next = more
        .then(|| items.last().map(&key))
        .flatten()
        .map(|k| encode(&k));
    let mut r = Json(Value::Array(items)).into_response();
    if let Some(c) = next {
        let query: Vec<String> = uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|kv| !kv.is_empty() && !kv.starts_with("cursor="))
            .map(str::to_string)
            .chain(std::iter::once(format!("cursor={c}")))
            .collect();
        let link = format!("<{}?{}>; rel=\"next\"", uri.path(), query.join("&"));
        if let (Ok(l), Ok(n)) = (HeaderValue::from_str(&link), HeaderValue::from_str(&c)) {
            r.headers_mut().insert(header::LINK, l);
            r.headers_mut().insert("x-next-cursor", n);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_page_links_to_the_next_with_the_cursor_of_its_last_item() {
        let uri: Uri = "/api/v1/sites?limit=2&cursor=old".parse().unwrap();
        let items = vec![Value::from("a"), Value::from("b"), Value::from("c")];
        let r = respond(&uri, items, 2, |v| v.as_str().unwrap().to_string());
        let c = r.headers()["x-next-cursor"].to_str().unwrap().to_string();
        assert_eq!(decode(&c).unwrap(), "b");
        assert_eq!(
            r.headers()[header::LINK].to_str().unwrap(),
            format!("</api/v1/sites?limit=2&cursor={c}>; rel=\"next\"")
        );
        let r = respond(&uri, vec![Value::from("a")], 2, |_| "x".into());
        assert!(
            r.headers().get(header::LINK).is_none(),
            "the last page has no next"
        );
        assert!(decode("***").is_err());
        assert!(limit(Some(0), 100, 1000).is_err() && limit(Some(1001), 100, 1000).is_err());
    }
}
