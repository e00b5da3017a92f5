//! Users, API keys and sessions: what an admin does, from the CLI
//! (`headend user …`) or the REST API. Passwords and key secrets are
//! checked and hashed here and never returned or logged.

use serde::Deserialize;

use super::access::{Guard, hashing};
use super::{Refused, Result, invalid, refused};
use crate::domain::{Actor, Grant, Role, Scope, UnixMs, secret};
use crate::store::Db;
use crate::store::api_keys::ApiKeyRow;
use crate::store::users::UserRow;
use crate::wallclock::now_ms;

/// Longest API key lifetime, days.
pub const MAX_KEY_DAYS: i64 = 3650;

fn check_name(field: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{name:?}: 1 to 64 of a-z A-Z 0-9 . _ - @"),
        ))
    }
}

pub fn role(field: &str, v: &str) -> Result<Role> {
    v.parse()
        .map_err(|_| invalid(field, format!("{v:?}: use one of {}", Role::choices())))
}

pub fn scope(field: &str, sites: Option<&[String]>) -> Result<Scope> {
    Scope::from_list(sites).map_err(|e| invalid(field, e))
}

/// Refuses a grant wider than the caller's own (403): nobody gives
/// more than they hold, in role or in sites.
fn may_give(by: &Grant, new: &Grant, what: &str) -> Result<()> {
    if by.may_administer(new) {
        return Ok(());
    }
    let field = if by.role.rank() < new.role.rank() {
        "role"
    } else {
        "sites"
    };
    Err(refused(
        Refused::Forbidden,
        field,
        format!(
            "{what} would hold role {} over sites {}, wider than your own (role {} over sites {}); nobody grants beyond their own role and sites",
            new.role, new.scope, by.role, by.scope
        ),
    ))
}

fn user_grant(u: &UserRow) -> Grant {
    Grant::new(u.role, u.scope.clone())
}

pub fn key_grant(k: &ApiKeyRow) -> Grant {
    Grant::new(k.role, k.scope.clone())
}

/// `POST /api/v1/users`, `headend user add`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Login name: 1 to 64 of a-z A-Z 0-9 . _ - @
    pub user: String,
    /// admin, manager, dispatcher or viewer
    pub role: String,
    /// At least 12 characters.
    pub password: String,
    /// Site ids this user may see and act on; absent: all sites.
    #[serde(default)]
    pub sites: Option<Vec<String>>,
}

pub async fn add_user(db: &Db, guard: &Guard, by: &Grant, u: NewUser) -> Result<UserRow> {
    check_name("user", &u.user)?;
    let role = role("role", &u.role)?;
    let scope = scope("sites", u.sites.as_deref())?;
    may_give(by, &Grant::new(role, scope.clone()), "the new user")?;
    secret::check_password(&u.password).map_err(|e| invalid("password", e))?;
    let pw = u.password;
    let hash = hashing(guard, move || secret::hash_password(&pw))
        .await?
        .map_err(|e| invalid("password", e))?;
    let now = now_ms();
    let row = UserRow {
        user_id: u.user.clone(),
        role,
        scope,
        password_hash: hash,
        disabled_ms: None,
        created_ms: UnixMs::from_ms(now),
        updated_ms: UnixMs::from_ms(now),
    };
    if !db.users().add(&row).await? {
        return Err(refused(
            Refused::Conflict,
            "user",
            format!("a user {:?} exists already", u.user),
        ));
    }
    Ok(row)
}

/// `PATCH /api/v1/users/{user}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    #[serde(default)]
    pub role: Option<String>,
    /// New site scope; `["*"]` for all sites.
    #[serde(default)]
    pub sites: Option<Vec<String>>,
    #[serde(default)]
    pub disabled: Option<bool>,
}

/// Changes a user; the result and the row before. Any change ends the
/// user's sessions (a new role or scope holds from the next login).
pub async fn update_user(
    db: &Db,
    by: &Grant,
    id: &str,
    p: UserPatch,
) -> Result<(UserRow, UserRow)> {
    let role = p.role.as_deref().map(|r| role("role", r)).transpose()?;
    let scope = p
        .sites
        .as_deref()
        .map(|s| scope("sites", Some(s)))
        .transpose()?;
    if role.is_none() && scope.is_none() && p.disabled.is_none() {
        return Err(invalid(
            "",
            "nothing to change: give role, sites or disabled",
        ));
    }
    let before = get_user(db, by, id).await?;
    let after = Grant::new(
        role.unwrap_or(before.role),
        scope.clone().unwrap_or_else(|| before.scope.clone()),
    );
    may_give(by, &after, "the user")?;
    db.users()
        .update(
            id,
            role,
            scope.as_ref(),
            p.disabled,
            crate::wallclock::now(),
        )
        .await?;
    Ok((get_user(db, by, id).await?, before))
}

/// A user the caller may manage; any other does not exist for it (404,
/// as a site outside a scope: a scoped admin cannot probe who the full
/// admins are).
pub async fn get_user(db: &Db, by: &Grant, id: &str) -> Result<UserRow> {
    match db.users().get(id).await? {
        Some(u) if by.may_administer(&user_grant(&u)) => Ok(u),
        // answered alike, audited as a denial
        Some(_) => Err(refused(Refused::OutOfScope, "", format!("no user {id:?}"))),
        None => Err(refused(Refused::NotFound, "", format!("no user {id:?}"))),
    }
}

/// Lifts the login locks on a user the caller may manage (every client
/// network); returns how many were lifted.
pub async fn unlock(db: &Db, by: &Grant, id: &str) -> Result<(UserRow, u64)> {
    let u = get_user(db, by, id).await?;
    let n = db.login_locks().unlock(&u.user_id).await?;
    Ok((u, n))
}

/// The users the caller may manage, by name after `after`: at most
/// `limit`.
pub async fn list_users(db: &Db, by: &Grant, after: &str, limit: i64) -> Result<Vec<UserRow>> {
    administered(
        by,
        limit,
        after.to_string(),
        user_grant,
        |u| u.user_id.clone(),
        |after, n| async move { db.users().list(&after, n).await },
    )
    .await
}

/// Pages through a list (`fetch(cursor, n)`, the cursor of a row given by
/// `key`) keeping the rows `by` may administer, until `limit` are found
/// or the list ends: a scoped admin's page is full even when the rows it
/// may not see come first.
async fn administered<T, K, Fut>(
    by: &Grant,
    limit: i64,
    first: K,
    grant: fn(&T) -> Grant,
    key: fn(&T) -> K,
    fetch: impl Fn(K, i64) -> Fut,
) -> Result<Vec<T>>
where
    Fut: std::future::Future<Output = std::result::Result<Vec<T>, crate::Error>>,
{
    let batch = limit.max(1) * 2;
    let mut out = Vec::new();
    let mut cursor = first;
    loop {
        let rows = fetch(cursor, batch).await?;
        let done = rows.len() < batch as usize;
        let Some(last) = rows.last() else {
            return Ok(out);
        };
        cursor = key(last);
        out.extend(rows.into_iter().filter(|r| by.may_administer(&grant(r))));
        if done || out.len() as i64 >= limit {
            out.truncate(limit.max(0) as usize);
            return Ok(out);
        }
    }
}

pub async fn reset_password(
    db: &Db,
    guard: &Guard,
    by: &Grant,
    id: &str,
    password: String,
) -> Result<()> {
    secret::check_password(&password).map_err(|e| invalid("password", e))?;
    get_user(db, by, id).await?;
    let hash = hashing(guard, move || secret::hash_password(&password))
        .await?
        .map_err(|e| invalid("password", e))?;
    db.users()
        .set_password(id, &hash, crate::wallclock::now())
        .await?;
    db.login_locks().unlock(id).await?;
    Ok(())
}

/// `POST /api/v1/api-keys`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// What it is for (shown in lists), 1 to 64 of a-z A-Z 0-9 . _ - @
    pub name: String,
    pub role: String,
    #[serde(default)]
    pub sites: Option<Vec<String>>,
    /// Days until it expires (1 to 3650); absent: never.
    #[serde(default)]
    pub expires_in_days: Option<i64>,
}

/// Creates a key: the row and the key itself (shown once, never again).
/// The key never holds more than `grant` (the caller's), and while it
/// lives it never holds more than `by`, its creator, holds at the time
/// of each use ([`super::access::verify`]).
pub async fn add_key(db: &Db, grant: &Grant, k: NewKey, by: &Actor) -> Result<(ApiKeyRow, String)> {
    check_name("name", &k.name)?;
    let role = role("role", &k.role)?;
    let scope = match (&k.sites, &grant.scope) {
        // a scoped caller's key is scoped like the caller unless it says less
        (None, Scope::Sites(_)) => grant.scope.clone(),
        _ => scope("sites", k.sites.as_deref())?,
    };
    may_give(grant, &Grant::new(role, scope.clone()), "the key")?;
    let now = now_ms();
    let expires_ms = match k.expires_in_days {
        None => None,
        Some(d) if (1..=MAX_KEY_DAYS).contains(&d) => {
            Some(UnixMs::from_ms(now).plus_ms(d * 86_400_000))
        }
        Some(_) => {
            return Err(invalid(
                "expires_in_days",
                format!("from 1 to {MAX_KEY_DAYS}, or leave it out"),
            ));
        }
    };
    let (id, key, hash) = secret::new_api_key();
    let row = ApiKeyRow {
        key_id: id,
        name: k.name,
        secret_hash: hash,
        role,
        scope,
        created_by: by.clone(),
        created_ms: UnixMs::from_ms(now),
        expires_ms,
        last_used_ms: None,
        revoked_ms: None,
    };
    db.api_keys().add(&row).await?;
    Ok((row, key))
}

/// A key the caller may manage; any other does not exist for it.
pub async fn get_key(db: &Db, by: &Grant, id: &str) -> Result<ApiKeyRow> {
    match db.api_keys().get(id).await? {
        Some(k) if by.may_administer(&key_grant(&k)) => Ok(k),
        Some(_) => Err(refused(
            Refused::OutOfScope,
            "",
            format!("no API key {id:?}"),
        )),
        None => Err(refused(Refused::NotFound, "", format!("no API key {id:?}"))),
    }
}

/// The keys the caller may manage, newest first before `before_ms`.
pub async fn list_keys(db: &Db, by: &Grant, before_ms: i64, limit: i64) -> Result<Vec<ApiKeyRow>> {
    administered(
        by,
        limit,
        before_ms,
        key_grant,
        |k| k.created_ms.ms(),
        |before, n| async move { db.api_keys().list(UnixMs::from_ms(before), n).await },
    )
    .await
}

pub async fn revoke_key(db: &Db, by: &Grant, id: &str) -> Result<ApiKeyRow> {
    get_key(db, by, id).await?;
    if !db.api_keys().revoke(id, crate::wallclock::now()).await? {
        return Err(refused(
            Refused::Conflict,
            "",
            format!("API key {id} is revoked already"),
        ));
    }
    get_key(db, by, id).await
}
