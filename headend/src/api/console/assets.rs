//! The console's static files, embedded in the binary and served under a
//! name carrying their content's hash (`console.3f2a….css`), cached for a
//! year: a new build's file has a new name.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::layout;

/// (name, media type, content).
const FILES: &[(&str, &str, &str)] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("assets/favicon.svg"),
    ),
];

/// Each file's served name: its stem, 12 hex digits of its hash, its
/// extension.
static SERVED: LazyLock<Vec<(String, usize)>> = LazyLock::new(|| {
    FILES
        .iter()
        .enumerate()
        .map(|(i, (name, _, content))| {
            let hash = Sha256::digest(content.as_bytes());
            let hex: String = hash.iter().take(6).map(|b| format!("{b:02x}")).collect();
            let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
            (format!("{stem}.{hex}.{ext}"), i)
        })
        .collect()
});

/// The URL of the embedded file `name` (its fingerprinted name).
pub fn url(name: &str) -> String {
    FILES
        .iter()
        .position(|(n, _, _)| *n == name)
        .and_then(|i| SERVED.iter().find(|(_, j)| *j == i))
        .map_or_else(
            || format!("/assets/{name}"),
            |(s, _)| format!("/assets/{s}"),
        )
}

pub async fn serve(Path(name): Path<String>) -> Response {
    let Some((_, i)) = SERVED.iter().find(|(s, _)| *s == name) else {
        return layout::error(StatusCode::NOT_FOUND, "There is no such file.");
    };
    let (_, media, content) = FILES[*i];
    (
        [
            (header::CONTENT_TYPE, media),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        content,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_asset_is_served_under_its_content_hash() {
        let u = url("console.css");
        assert!(
            u.starts_with("/assets/console.") && u.ends_with(".css"),
            "{u}"
        );
        assert_eq!(u.len(), "/assets/console.".len() + 12 + ".css".len(), "{u}");
    }
}
