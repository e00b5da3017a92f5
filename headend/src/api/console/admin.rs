//! Administration: users (add, role, sites, disable, reset password,
//! unlock), API keys (create, shown once; revoke), enrolling a site (a
//! one-time token with the installer's exact command and a copy button)
//! and webhook dead letters. Certificates are revoked from their site's
//! page. Read and written through `services::admin`,
//! `services::enrollment` and `services::escalations`, as the REST routes
//! under `/api/v1/users`, `/api/v1/api-keys`,
//! `/api/v1/sites/{site}/enrollment-tokens` and `/api/v1/webhooks/dead`
//! are; a scoped admin manages only users and keys within its sites.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use jiff::tz::TimeZone;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Viewer, failed, given, seg, when};
use crate::api::ApiState;
use crate::api::access::Caller;
use crate::domain::{Role, SiteId, UnixMs};
use crate::services::access::Principal;
use crate::services::admin::{self as svc, NewKey, NewUser, UserPatch};

/// Rows of each list on the page.
const ROWS: i64 = 200;

/// "a, b" as a scope's sites; empty: all sites.
fn sites_of(v: &str) -> Option<Vec<String>> {
    let list: Vec<String> = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    (!list.is_empty()).then_some(list)
}

fn role_select(id: &str, chosen: Option<Role>) -> Markup {
    html! {
        select name="role" id=(id) {
            @for r in Role::ALL {
                @if chosen == Some(*r) { option value=(r.as_str()) selected { (r) } }
                @else { option value=(r.as_str()) { (r) } }
            }
        }
    }
}

/// A stored time in UTC ("—" when there is none).
fn utc(v: Option<UnixMs>) -> Markup {
    when(v, &TimeZone::UTC)
}

/// What an admin page shows above its lists: a problem, or what was just
/// made (a key, shown once).
enum Shown {
    Problem(String),
    Key { id: String, key: String },
}

async fn page(
    s: &ApiState,
    p: &Principal,
    v: &Viewer,
    shown: Option<Shown>,
    status: StatusCode,
) -> Response {
    let grant = p.grant();
    let users = match svc::list_users(&s.db, &grant, "", ROWS).await {
        Ok(x) => x,
        Err(e) => return failed(e),
    };
    let keys = match svc::list_keys(&s.db, &grant, i64::MAX, ROWS).await {
        Ok(x) => x,
        Err(e) => return failed(e),
    };
    let dead = match crate::services::escalations::dead_letters(&s.ctx(p), i64::MAX, ROWS).await {
        Ok(x) => x,
        Err(e) => return failed(e),
    };
    let body = html! {
        nav.sub aria-label="Administration" { ul {
            li { a href="#users-h" { "Users" } } li { a href="#keys-h" { "API keys" } }
            li { a href="/admin/enroll" { "Enroll a site" } } li { a href="#dead-h" { "Webhook dead letters" } }
        } }
        @match &shown {
            Some(Shown::Problem(why)) => { p.problem role="alert" { (why) } }
            Some(Shown::Key { id, key }) => {
                section.made role="status" {
                    p { "API key " code { (id) } " was created. Copy it now: it is shown once, never again." }
                    pre #secret { (key) }
                    button.copy type="button" data-copy="secret" hidden { "Copy" }
                }
            }
            None => {}
        }
        section aria-labelledby="users-h" {
            h2 #users-h { "Users" }
            div.table-wrap tabindex="0" role="region" aria-label="Table (scrolls sideways on a narrow screen)" { table {
                (layout::head(&["User", "Role", "Sites", "State", "Changed"]))
                tbody { @for u in &users { tr {
                    td { a href=(format!("/admin/users/{}", seg(&u.user_id))) { (u.user_id) } }
                    td { (u.role) } td { (u.scope) }
                    td { @if u.disabled_ms.is_some() { span.problem { "disabled" } } @else { "active" } }
                    td { (utc(Some(u.updated_ms))) }
                } } }
            } }
            h3 { "Add a user" }
            form.grid method="post" action="/admin/users" {
                input type="hidden" name="csrf" value=(v.token);
                label for="new-user" { "Login name" } input #new-user name="user" required maxlength="64" autocomplete="off";
                label for="new-role" { "Role" } (role_select("new-role", Some(Role::Viewer)))
                label for="new-sites" { "Sites (comma-separated; empty for all)" } input #new-sites name="sites";
                label for="new-password" { "Password (12 characters or more)" } input #new-password name="password" type="password" required minlength="12" autocomplete="new-password";
                button.primary type="submit" { "Add" }
            }
        }
        section aria-labelledby="keys-h" {
            h2 #keys-h { "API keys" }
            div.table-wrap tabindex="0" role="region" aria-label="Table (scrolls sideways on a narrow screen)" { table {
                (layout::head(&["Key", "Name", "Role", "Sites", "Created", "Expires", "Last used", "State"]))
                tbody { @for k in &keys { tr {
                    td { code { (k.key_id) } } td { (k.name) } td { (k.role) } td { (k.scope) }
                    td { (utc(Some(k.created_ms))) " by " (k.created_by) }
                    td { (utc(k.expires_ms)) } td { (utc(k.last_used_ms)) }
                    td {
                        @if k.revoked_ms.is_some() { span.problem { "revoked" } } @else {
                            form.inline method="post" action=(format!("/admin/keys/{}/revoke", seg(&k.key_id))) {
                                input type="hidden" name="csrf" value=(v.token);
                                button.danger type="submit" { "Revoke " span.visually-hidden { (k.key_id) } }
                            }
                        }
                    }
                } } }
            } }
            h3 { "Create a key" }
            form.grid method="post" action="/admin/keys" {
                input type="hidden" name="csrf" value=(v.token);
                label for="key-name" { "What it is for" } input #key-name name="name" required maxlength="64";
                label for="key-role" { "Role" } (role_select("key-role", Some(Role::Viewer)))
                label for="key-sites" { "Sites (comma-separated; empty for all)" } input #key-sites name="sites";
                label for="key-days" { "Expires in days (empty: never)" } input #key-days name="expires_in_days" type="number" min="1" max="3650";
                button.primary type="submit" { "Create" }
            }
        }
        section aria-labelledby="dead-h" {
            h2 #dead-h { "Webhook dead letters" }
            @if dead.is_empty() { p.muted { "None: every webhook notification was delivered or is still being tried." } } @else {
            div.table-wrap tabindex="0" role="region" aria-label="Table (scrolls sideways on a narrow screen)" { table {
                (layout::head(&["Id", "Subject", "Event", "Attempts", "Last error", "Created", "Given up"]))
                tbody { @for d in &dead { tr {
                    td { (d.id) }
                    td { @if d.subject.to_string() == "escalation" { a href=(format!("/escalations/{}", seg(&d.escalation_id))) { (d.subject) " " (d.escalation_id) } } @else { (d.subject) " " (d.escalation_id) } }
                    td { (d.event) } td.num { (d.attempts) } td { span.problem { (d.last_error) } }
                    td { (utc(Some(d.created_ms))) } td { (utc(d.done_ms)) }
                } } }
            } } }
        }
    };
    (status, layout::page(v, "/admin", "Administration", body)).into_response()
}

pub async fn show(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Extension(v): Extension<Viewer>,
) -> Response {
    page(&s, &p, &v, None, StatusCode::OK).await
}

/// A refusal shown above the form (`Ok`), or a page of its own when what
/// was named is not there (`Err`, its message: a user outside the
/// caller's scope is not found, as in the API).
fn refusal(e: crate::services::ServiceError) -> Result<Shown, layout::NotFound> {
    layout::refusal(e).map(Shown::Problem)
}

#[derive(Deserialize, Default)]
pub struct UserForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    sites: String,
    #[serde(default)]
    password: String,
}

pub async fn add_user(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Extension(v): Extension<Viewer>,
    Form(f): Form<UserForm>,
) -> Response {
    let req = NewUser {
        user: f.user.trim().to_string(),
        role: f.role,
        password: f.password,
        sites: sites_of(&f.sites),
    };
    match svc::add_user(&s.db, &s.guard, &p.grant(), req).await {
        Ok(u) => Redirect::to(&format!("/admin/users/{}", seg(&u.user_id))).into_response(),
        Err(e) => match refusal(e) {
            Ok(shown) => page(&s, &p, &v, Some(shown), StatusCode::UNPROCESSABLE_ENTITY).await,
            Err(nf) => nf.into_response(),
        },
    }
}

async fn user_page(
    s: &ApiState,
    p: &Principal,
    v: &Viewer,
    id: &str,
    problem: Option<&str>,
) -> Response {
    let u = match svc::get_user(&s.db, &p.grant(), id).await {
        Ok(u) => u,
        Err(e) => return failed(e),
    };
    let action = format!("/admin/users/{}", seg(&u.user_id));
    let sites = match &u.scope {
        crate::domain::Scope::All => String::new(),
        sc => sc.to_string(),
    };
    let body = html! {
        p { a href="/admin" { "Administration" } }
        @if let Some(pr) = problem { p.problem role="alert" { (pr) } }
        dl.facts {
            dt { "Role" } dd { (u.role) } dt { "Sites" } dd { (u.scope) }
            dt { "State" } dd { @if let Some(d) = u.disabled_ms { "disabled " (utc(Some(d))) } @else { "active" } }
            dt { "Created" } dd { (utc(Some(u.created_ms))) }
        }
        section aria-labelledby="change-h" {
            h2 #change-h { "Role, sites and state" }
            p.muted { "Any change ends the user's sessions: it holds from their next login." }
            form.grid method="post" action=(action) {
                input type="hidden" name="csrf" value=(v.token);
                label for="role" { "Role" } (role_select("role", Some(u.role)))
                label for="sites" { "Sites (comma-separated; empty for all)" } input #sites name="sites" value=(sites);
                label for="state" { "State" }
                select #state name="state" {
                    @if u.disabled_ms.is_some() { option value="active" { "active" } option value="disabled" selected { "disabled" } }
                    @else { option value="active" selected { "active" } option value="disabled" { "disabled" } }
                }
                button.primary type="submit" { "Save" }
            }
        }
        section aria-labelledby="password-h" {
            h2 #password-h { "Reset the password" }
            form.grid method="post" action=(format!("{action}/password")) {
                input type="hidden" name="csrf" value=(v.token);
                label for="password" { "New password (12 characters or more)" }
                input #password name="password" type="password" required minlength="12" autocomplete="new-password";
                button type="submit" { "Reset" }
            }
            form method="post" action=(format!("{action}/unlock")) {
                input type="hidden" name="csrf" value=(v.token);
                button type="submit" { "Lift login locks" }
            }
        }
    };
    layout::answer(
        problem.is_some(),
        layout::page(v, "/admin", &format!("User {}", u.user_id), body),
    )
}

pub async fn user(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Extension(v): Extension<Viewer>,
    Path(id): Path<String>,
) -> Response {
    user_page(&s, &p, &v, &id, None).await
}

#[derive(Deserialize, Default)]
pub struct ChangeForm {
    #[serde(default)]
    role: String,
    #[serde(default)]
    sites: String,
    #[serde(default)]
    state: String,
}

pub async fn change_user(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Extension(v): Extension<Viewer>,
    Path(id): Path<String>,
    Form(f): Form<ChangeForm>,
) -> Response {
    let patch = UserPatch {
        role: Some(f.role),
        sites: Some(sites_of(&f.sites).unwrap_or_else(|| vec!["*".into()])),
        disabled: Some(f.state == "disabled"),
    };
    match svc::update_user(&s.db, &p.grant(), &id, patch).await {
        Ok(_) => Redirect::to(&format!("/admin/users/{}", seg(&id))).into_response(),
        Err(e) => match refusal(e) {
            Ok(Shown::Problem(why)) => user_page(&s, &p, &v, &id, Some(&why)).await,
            Ok(_) => user_page(&s, &p, &v, &id, None).await,
            Err(nf) => nf.into_response(),
        },
    }
}

#[derive(Deserialize, Default)]
pub struct PasswordForm {
    #[serde(default)]
    password: String,
}

pub async fn reset_password(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Extension(v): Extension<Viewer>,
    Path(id): Path<String>,
    Form(f): Form<PasswordForm>,
) -> Response {
    match svc::reset_password(&s.db, &s.guard, &p.grant(), &id, f.password).await {
        Ok(()) => Redirect::to(&format!("/admin/users/{}", seg(&id))).into_response(),
        Err(e) => match refusal(e) {
            Ok(Shown::Problem(why)) => user_page(&s, &p, &v, &id, Some(&why)).await,
            Ok(_) => user_page(&s, &p, &v, &id, None).await,
            Err(nf) => nf.into_response(),
        },
    }
}

pub async fn unlock(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Response {
    match svc::unlock(&s.db, &p.grant(), &id).await {
        Ok(_) => Redirect::to(&format!("/admin/users/{}", seg(&id))).into_response(),
        Err(e) => failed(e),
    }
}

#[derive(Deserialize, Default)]
pub struct KeyForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    sites: String,
    #[serde(default)]
    expires_in_days: String,
}

pub async fn add_key(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Extension(v): Extension<Viewer>,
    Form(f): Form<KeyForm>,
) -> Response {
    let days = match f.expires_in_days.trim() {
        "" => None,
        d => match d.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                let why = format!("Expires in days: {d:?} is not a whole number.");
                return page(
                    &s,
                    &p,
                    &v,
                    Some(Shown::Problem(why)),
                    StatusCode::UNPROCESSABLE_ENTITY,
                )
                .await;
            }
        },
    };
    let req = NewKey {
        name: f.name.trim().to_string(),
        role: f.role,
        sites: sites_of(&f.sites),
        expires_in_days: days,
    };
    match svc::add_key(&s.db, &p.grant(), req, &p.actor).await {
        Ok((row, key)) => {
            page(
                &s,
                &p,
                &v,
                Some(Shown::Key {
                    id: row.key_id,
                    key,
                }),
                StatusCode::CREATED,
            )
            .await
        }
        Err(e) => match refusal(e) {
            Ok(shown) => page(&s, &p, &v, Some(shown), StatusCode::UNPROCESSABLE_ENTITY).await,
            Err(nf) => nf.into_response(),
        },
    }
}

pub async fn revoke_key(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Response {
    match svc::revoke_key(&s.db, &p.grant(), &id).await {
        Ok(_) => Redirect::to("/admin#keys-h").into_response(),
        Err(e) => failed(e),
    }
}

#[derive(Deserialize, Default)]
pub struct EnrollQuery {
    site: Option<String>,
}

fn enroll_form(v: &Viewer, site: &str, problem: Option<&str>) -> Markup {
    html! {
        p.muted { "A one-time token buys the site's agent its certificate. Run the command on the site PC, where edge-agent is installed, within the token's life." }
        @if let Some(pr) = problem { p.problem role="alert" { (pr) } }
        form.grid method="post" action="/admin/enroll" {
            input type="hidden" name="csrf" value=(v.token);
            label for="site" { "Site id" } input #site name="site" required value=(site) maxlength="64";
            label for="minutes" { "Valid for (minutes, 1 to 4320)" } input #minutes name="expires_minutes" type="number" min="1" max="4320" value="60";
            button.primary type="submit" { "Make a token" }
        }
    }
}

pub async fn enroll_page(
    Extension(v): Extension<Viewer>,
    Query(q): Query<EnrollQuery>,
) -> Response {
    let body = enroll_form(&v, given(&q.site).unwrap_or_default(), None);
    layout::page(&v, "/admin", "Enroll a site", body).into_response()
}

#[derive(Deserialize, Default)]
pub struct EnrollForm {
    #[serde(default)]
    site: String,
    #[serde(default)]
    expires_minutes: String,
}

pub async fn enroll(
    State(s): State<ApiState>,
    Caller(p): Caller,
    Extension(v): Extension<Viewer>,
    Form(f): Form<EnrollForm>,
) -> Response {
    let again = |why: String| {
        let body = enroll_form(&v, f.site.trim(), Some(&why));
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            layout::page(&v, "/admin", "Enroll a site", body),
        )
            .into_response()
    };
    let site = match SiteId::parse(f.site.trim()) {
        Ok(x) => x,
        Err(e) => return again(format!("Site id: {e}")),
    };
    let minutes = match f.expires_minutes.trim() {
        "" => None,
        m => match m.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                return again(format!(
                    "Valid for: {m:?} is not a whole number of minutes."
                ));
            }
        },
    };
    let t = match s
        .issuing
        .new_token_visible(&s.ctx(&p), &p.actor, &site, minutes)
        .await
    {
        Ok(t) => t,
        Err(e) => {
            return match layout::refusal(e) {
                Ok(why) => again(why),
                Err(nf) => nf.into_response(),
            };
        }
    };
    tracing::info!(%site, token = %t.token_id, "enrollment token created from the console");
    let body = html! {
        section.made role="status" {
            p { "Token " code { (t.token_id) } " for site " strong { (t.site_id) } ", valid until " (utc(Some(t.expires_ms))) ". It is shown once." }
            h2 { "On the site PC, run:" }
            pre #command { (t.command) }
            button.copy type="button" data-copy="command" hidden { "Copy the command" }
            p.muted { "The CA's fingerprint in the command lets the agent check it is talking to this headend before it sends anything." }
        }
        p { a href=(format!("/sites/{}", seg(&t.site_id))) { "The site's page" } " · " a href="/admin/enroll" { "Another token" } }
    };
    (
        StatusCode::CREATED,
        layout::page(&v, "/admin", "Enroll a site", body),
    )
        .into_response()
}
