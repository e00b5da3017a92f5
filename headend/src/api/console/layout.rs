//! The console's page shell: the document, the navigation every page
//! carries, the error page, and the headers every answer gets.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::assets;
use super::gate::value;
use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::domain::{Permission, Role, SiteId};
use crate::services::ServiceError;

/// The `{site}` segment of a console path as a site id. A text that is no
/// site id names no site: the not-found page, as for a site that does
/// not exist or is outside the caller's scope.
pub struct SitePath(pub SiteId);

impl<S: Send + Sync> FromRequestParts<S> for SitePath {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let site = params.get("site").map_or("", String::as_str);
        crate::services::site_named(site)
            .map(SitePath)
            .map_err(failed)
    }
}

/// A filter's text: trimmed, empty as none, bounded.
pub fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= 128)
}

/// A service error as a console page with the API's status and message
/// (a site outside the scope is not found, as there).
pub fn failed(e: ServiceError) -> Response {
    let api = crate::api::ApiError::from(e);
    error(api.status, &api.message)
}

/// What a form shows when its service refuses it: the message, above the
/// form again (`Ok`); or, when what it names is not there (or outside the
/// caller's scope, alike as in the API), the not-found page (`Err`).
pub fn refusal(e: ServiceError) -> Result<String, NotFound> {
    let api = crate::api::ApiError::from(e);
    if api.status == StatusCode::NOT_FOUND {
        return Err(NotFound(api.message));
    }
    Ok(api.message)
}

/// The not-found page, saying what is not there.
pub struct NotFound(pub String);

impl IntoResponse for NotFound {
    fn into_response(self) -> Response {
        error(StatusCode::NOT_FOUND, &self.0)
    }
}

/// A form's page: 422 when it shows a problem, else 200.
pub fn answer(problem: bool, page: Html) -> Response {
    let status = if problem {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    (status, page).into_response()
}

/// A time in the site's zone, with UTC on hover; "—" for none (a stored
/// 0 means never).
pub fn when(t: Option<crate::domain::UnixMs>, tz: &TimeZone) -> Markup {
    let ms = t.map(crate::domain::UnixMs::ms).filter(|m| *m > 0);
    let Some(t) = ms.and_then(|m| Timestamp::from_millisecond(m).ok()) else {
        return html! { span.muted { "—" } };
    };
    let local = t
        .to_zoned(tz.clone())
        .strftime("%a %d %b %H:%M %Z")
        .to_string();
    let utc = t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    html! { time datetime=(utc) title=(format!("{utc} UTC")) { (local) } }
}

/// A path segment, percent-encoded (ids come from agents and operators).
pub fn seg(s: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const KEEP: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    utf8_percent_encode(s, KEEP).to_string()
}

/// The console's page of one tank.
pub fn tank_url(site: &str, tank: &str) -> String {
    format!("/sites/{}/tanks/{}", seg(site), seg(tank))
}

/// The filters given (trimmed, not empty), and `extra`, as a query
/// string: the next page's and the export's links keep the filters.
pub fn query_of(filters: &[(&str, &Option<String>)], extra: Option<(&str, &str)>) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in filters {
        if let Some(x) = given(v) {
            q.append_pair(k, x);
        }
    }
    if let Some((k, v)) = extra {
        q.append_pair(k, v);
    }
    q.finish()
}

/// A table's head row of `columns`.
pub fn head(columns: &[&str]) -> Markup {
    html! {
        thead { tr { @for c in columns { th scope="col" { (c) } } } }
    }
}

/// A rendered page.
pub struct Html(pub String);

impl IntoResponse for Html {
    fn into_response(self) -> Response {
        ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], self.0).into_response()
    }
}

/// Who is looking, for the shell: their name, role and the session's form
/// token (put there by the gate).
#[derive(Clone, Debug)]
pub struct Viewer {
    pub name: String,
    pub role: Role,
    pub token: String,
}

/// The pages of the navigation: (path, label).
const NAV: &[(&str, &str, Option<Permission>)] = &[
    ("/", "Today", None),
    ("/sites", "Sites", None),
    ("/tanks", "Tanks", None),
    ("/commands", "Commands", None),
    ("/loads", "Loads", None),
    ("/escalations", "Escalations", None),
    ("/audit", "Audit", Some(Permission::Audit)),
    ("/admin", "Admin", Some(Permission::Admin)),
];

fn document(title: &str, body: Markup) -> Html {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · Tankwatch" }
                    link rel="stylesheet" href=(assets::url("console.css"));
                    link rel="icon" type="image/svg+xml" href=(assets::url("favicon.svg"));
                    script src=(assets::url("console.js")) defer {}
                }
                body { (body) }
            }
        }
        .into_string(),
    )
}

/// A page without navigation (the login).
pub fn bare(title: &str, body: Markup) -> Html {
    document(title, body)
}

/// A page of the console: the navigation (`current` marked), who is
/// logged in and the logout form, then `body`.
pub fn page(v: &Viewer, current: &str, title: &str, body: Markup) -> Html {
    document(
        title,
        html! {
            a.skip href="#main" { "Skip to content" }
            header.top {
                nav aria-label="Main" {
                    ul {
                        @for (path, label, need) in NAV {
                            @if need.is_none_or(|p| v.role.may(p)) {
                            li {
                                @if *path == current {
                                    a href=(path) aria-current="page" { (label) }
                                } @else {
                                    a href=(path) { (label) }
                                }
                            }
                            }
                        }
                    }
                }
                form.logout method="post" action="/logout" {
                    span.who { (v.name) " · " (v.role) }
                    input type="hidden" name="csrf" value=(v.token);
                    button type="submit" { "Log out" }
                }
            }
            main #main {
                h1 { (title) }
                (body)
            }
        },
    )
}

/// An error page with `status`.
pub fn error(status: StatusCode, why: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let page = document(
        title,
        html! {
            main #main {
                h1 { (title) }
                p.problem role="alert" { (why) }
                p { a href="/" { "Back to the console" } }
            }
        },
    );
    (status, page).into_response()
}

/// The Content-Security-Policy of every console answer: this origin's
/// styles and scripts only, none inline, no framing, forms to this
/// origin.
pub const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// `r` with the headers every console answer carries.
pub fn secured(mut r: Response, https: bool) -> Response {
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, value(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, value("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, value("DENY"));
    h.insert(header::REFERRER_POLICY, value("same-origin"));
    if https {
        h.insert(header::STRICT_TRANSPORT_SECURITY, value("max-age=31536000"));
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        // pages show live data and who is logged in: never cached
        h.insert(header::CACHE_CONTROL, value("no-store"));
    }
    r
}
