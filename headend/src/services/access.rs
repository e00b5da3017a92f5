//! Who is calling, and logging in: authentication of bearer credentials
//! (access tokens and API keys), login with throttling, refresh-token
//! rotation with family revocation on reuse, logout. No HTTP here: the
//! API turns an [`AuthError`] into 401 or 429.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::Error;
use crate::domain::secret::{self, Bearer};
use crate::domain::throttle::{DEFAULT_CAP, RateLimit, client_net};
use crate::domain::{Actor, Grant, Role, Scope, UnixMs};
use crate::store::Db;
use crate::store::api_keys::LAST_USED_STEP_MS;
use crate::store::users::Issue;
use crate::wallclock::now_ms;

/// Access token lifetime, ms (15 min).
pub const ACCESS_TTL_MS: i64 = 15 * 60_000;
/// Refresh token lifetime, ms (12 h without a refresh ends the session).
pub const REFRESH_TTL_MS: i64 = 12 * 3_600_000;
/// Longest session, ms (7 days, however often it is refreshed).
pub const SESSION_TTL_MS: i64 = 7 * 24 * 3_600_000;
/// Login attempts per client address a minute (the burst is two thirds).
pub const LOGINS_PER_MINUTE: u32 = 30;
/// Password checks at once (argon2 needs 19 MiB and ~30 ms of a core
/// each; more at once would only queue on the CPU and the memory).
pub const HASHING_AT_ONCE: usize = 2;
/// While the database does not answer, a credential verified within
/// this long is still accepted (stale-if-error), so an operator and a
/// Prometheus scraper can still read `/metrics` and `/ready` during a
/// database outage, ms.
pub const STALE_IF_ERROR_MS: i64 = 5 * 60_000;
/// The same for `/metrics` (a day: an outage is what it must show).
pub const METRICS_STALE_IF_ERROR_MS: i64 = 24 * 3_600_000;
/// Credentials remembered for that.
pub const VERIFIED_CAP: usize = 10_000;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub actor: Actor,
    pub role: Role,
    pub scope: Scope,
    pub kind: PrincipalKind,
}

impl Principal {
    /// What this caller may grant and manage.
    pub fn grant(&self) -> Grant {
        Grant::new(self.role, self.scope.clone())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalKind {
    User { name: String, session_id: String },
    ApiKey { id: String },
}

/// Why a credential was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No, an unknown, an expired or a revoked credential; a wrong password.
    #[error("{0}")]
    Unauthenticated(String),
    /// Throttled: retry after this many ms.
    #[error("too many attempts; retry in {} s", (.0 + 999) / 1000)]
    Throttled(i64),
    #[error(transparent)]
    Store(#[from] Error),
}

/// Login throttling, shared by the API's handlers.
#[derive(Clone)]
pub struct Guard {
    addrs: Arc<Mutex<RateLimit<IpAddr>>>,
    hashing: Arc<tokio::sync::Semaphore>,
    /// Hash of a credential → its principal and when the database last said so.
    verified: Arc<Mutex<std::collections::HashMap<String, (Principal, i64)>>>,
}

impl Default for Guard {
    fn default() -> Self {
        Guard::new(LOGINS_PER_MINUTE)
    }
}

impl Guard {
    /// With `per_minute` login attempts per client address (burst: two
    /// thirds of it, at least one). Raise it when many operators share
    /// one address (a NAT) and every login looks like one client.
    pub fn new(per_minute: u32) -> Guard {
        Guard {
            addrs: Arc::new(Mutex::new(RateLimit::new(
                per_minute,
                (per_minute * 2 / 3).max(1),
                DEFAULT_CAP,
            ))),
            hashing: Arc::new(tokio::sync::Semaphore::new(HASHING_AT_ONCE)),
            verified: Arc::default(),
        }
    }

    fn remember(&self, hash: &str, p: Option<&Principal>, now: i64) {
        let Ok(mut v) = self.verified.lock() else {
            return;
        };
        match p {
            None => {
                v.remove(hash);
            }
            Some(p) => {
                if v.len() >= VERIFIED_CAP && !v.contains_key(hash) {
                    v.retain(|_, (_, at)| *at >= now - STALE_IF_ERROR_MS);
                    if v.len() >= VERIFIED_CAP {
                        return;
                    }
                }
                v.insert(hash.to_string(), (p.clone(), now));
            }
        }
    }

    fn recall(&self, hash: &str, now: i64, stale_ms: i64) -> Option<Principal> {
        let v = self.verified.lock().ok()?;
        v.get(hash)
            .filter(|(_, at)| *at >= now - stale_ms)
            .map(|(p, _)| p.clone())
    }
}

/// [`verify`] with stale-if-error: the database's answer when it gives
/// one (a revoked credential is refused at once and forgotten); when it
/// cannot answer, the principal it gave within [`STALE_IF_ERROR_MS`], if
/// any (logged), else the database error.
pub async fn authenticate(
    db: &Db,
    guard: &Guard,
    token: &str,
    from: IpAddr,
) -> Result<Principal, AuthError> {
    authenticate_within(db, guard, token, from, STALE_IF_ERROR_MS).await
}

/// [`authenticate`] trusting what the database said within `stale_ms`
/// while it cannot answer: [`METRICS_STALE_IF_ERROR_MS`] for `/metrics`,
/// which reads only this process's memory, so that a scraper verified
/// before an outage goes on seeing `database_ready 0` through all of it
/// (past 5 minutes it would see only a failed scrape).
pub async fn authenticate_within(
    db: &Db,
    guard: &Guard,
    token: &str,
    from: IpAddr,
    stale_ms: i64,
) -> Result<Principal, AuthError> {
    let now = now_ms();
    let hash = secret::token_hash(token);
    match verify(db, token, from).await {
        Ok(p) => {
            guard.remember(&hash, Some(&p), now);
            Ok(p)
        }
        Err(AuthError::Store(e)) => match guard.recall(&hash, now, stale_ms) {
            Some(mut p) => {
                tracing::warn!(error = %e, actor = %p.actor,
                    "the database does not answer: accepting a credential it verified within 5 min");
                match &mut p.actor {
                    Actor::Operator { from: f, .. } | Actor::ApiKey { from: f, .. } => *f = from,
                    _ => {}
                }
                Ok(p)
            }
            None => Err(AuthError::Store(e)),
        },
        Err(e) => {
            guard.remember(&hash, None, now);
            Err(e)
        }
    }
}

/// Tokens of a login or a refresh (shown to the client once).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    /// Seconds the access token is valid.
    pub expires_in: i64,
    pub session_id: String,
    pub user: String,
    pub role: Role,
}

fn unauthenticated(why: &str) -> AuthError {
    AuthError::Unauthenticated(why.into())
}

/// Runs argon2 on a blocking thread, at most [`HASHING_AT_ONCE`] at once.
pub async fn hashing<T: Send + 'static>(
    guard: &Guard,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    let _permit = guard
        .hashing
        .acquire()
        .await
        .map_err(|_| Error::Db("password hashing closed".into()))?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Db(format!("password hashing: {e}")))
}

/// The principal of an `Authorization: Bearer` credential, as the
/// database says now.
pub async fn verify(db: &Db, token: &str, from: IpAddr) -> Result<Principal, AuthError> {
    let now = crate::wallclock::now();
    match secret::parse_bearer(token) {
        Some(Bearer::Access(t)) => {
            let o = db
                .users()
                .token_owner(&secret::token_hash(t), now)
                .await?
                .ok_or_else(|| {
                    unauthenticated(
                        "the access token is unknown, expired or revoked; log in again or refresh",
                    )
                })?;
            Ok(Principal {
                actor: Actor::Operator {
                    name: o.user_id.clone(),
                    from,
                },
                role: o.role,
                scope: o.scope,
                kind: PrincipalKind::User {
                    name: o.user_id,
                    session_id: o.session_id,
                },
            })
        }
        Some(Bearer::ApiKey { id, secret: s }) => {
            let bad = || unauthenticated("the API key is unknown, expired or revoked");
            let k = db.api_keys().get(id).await?.ok_or_else(bad)?;
            // the hash is compared in constant time; the id is public
            if !secret::same(&secret::token_hash(s), &k.secret_hash)
                || k.revoked_ms.is_some()
                || k.expires_ms.is_some_and(|e| e <= now)
            {
                return Err(bad());
            }
            if k.last_used_ms
                .is_none_or(|t| t < now.plus_ms(-LAST_USED_STEP_MS))
            {
                let db = db.clone();
                let id = k.key_id.clone();
                tokio::spawn(async move {
                    if let Err(e) = db.api_keys().touch(&id, now).await {
                        tracing::warn!(key = %id, error = %e, "recording an API key's last use failed");
                    }
                });
            }
            let g = key_power(db, &k, now).await?;
            Ok(Principal {
                actor: Actor::ApiKey {
                    id: k.key_id.clone(),
                    from,
                },
                role: g.role,
                scope: g.scope,
                kind: PrincipalKind::ApiKey { id: k.key_id },
            })
        }
        Some(Bearer::Refresh(_)) => Err(unauthenticated(
            "a refresh token only buys new tokens at POST /api/v1/auth/refresh",
        )),
        None => Err(unauthenticated(
            "the bearer credential is not a tankwatch access token or API key",
        )),
    }
}

/// Keys made by keys made by keys...: followed this deep at most.
const KEY_LINEAGE_MAX: usize = 8;

/// What a key may do now: its own grant met with its creator's as the
/// creator stands now (a user's role and sites; a key's own power, down
/// its lineage). A key whose creating user is disabled or gone, or whose
/// creating key is revoked or expired, is refused. Keys made by the
/// headend's command line have no creator to follow.
async fn key_power(
    db: &Db,
    k: &crate::store::api_keys::ApiKeyRow,
    now: UnixMs,
) -> Result<Grant, AuthError> {
    let mut power = crate::services::admin::key_grant(k);
    let mut by = k.created_by.clone();
    for _ in 0..KEY_LINEAGE_MAX {
        match &by {
            Actor::Operator { name, .. } => {
                let u = db.users().get(name).await?;
                let Some(u) = u.filter(|u| u.disabled_ms.is_none()) else {
                    return Err(unauthenticated(&format!(
                        "the API key's owner {name:?} is disabled or gone; the key went with them"
                    )));
                };
                return Ok(power.meet(&Grant::new(u.role, u.scope)));
            }
            Actor::ApiKey { id, .. } => {
                let parent = db.api_keys().get(id).await?;
                let Some(p) = parent
                    .filter(|p| p.revoked_ms.is_none() && p.expires_ms.is_none_or(|e| e > now))
                else {
                    return Err(unauthenticated(&format!(
                        "the API key that made this key ({id}) is revoked or expired; so is this one"
                    )));
                };
                power = power.meet(&crate::services::admin::key_grant(&p));
                by = p.created_by;
            }
            _ => return Ok(power),
        }
    }
    Err(unauthenticated(
        "the API key's lineage is too deep to follow",
    ))
}

fn new_tokens(session_id: &str, user: &str, role: Role) -> (Tokens, String, String) {
    let access = secret::new_access_token();
    let refresh = secret::new_refresh_token();
    let (ah, rh) = (secret::token_hash(&access), secret::token_hash(&refresh));
    (
        Tokens {
            access_token: access,
            refresh_token: refresh,
            token_type: "Bearer",
            expires_in: ACCESS_TTL_MS / 1000,
            session_id: session_id.into(),
            user: user.into(),
            role,
        },
        ah,
        rh,
    )
}

/// Logs in: throttled per client network, and locked per name from that
/// network ([`crate::domain::throttle`]); a wrong password and an
/// unknown or disabled name answer alike (and take the same time).
pub async fn login(
    db: &Db,
    guard: &Guard,
    user: &str,
    password: &str,
    from: IpAddr,
) -> Result<Tokens, AuthError> {
    let now = now_ms();
    let throttled = |ms: i64| AuthError::Throttled(ms.max(1));
    let net = client_net(from);
    if let Err(wait) = guard.addrs.lock().map_or(Ok(()), |mut a| a.take(&net, now)) {
        return Err(throttled(wait));
    }
    let locks = db.login_locks();
    if let Some(ms) = locks.locked_for(user, net, now).await? {
        return Err(throttled(ms));
    }
    let row = db.users().get(user).await?;
    let phc = row
        .as_ref()
        .filter(|u| u.disabled_ms.is_none())
        .map_or_else(
            || secret::decoy_hash().to_string(),
            |u| u.password_hash.clone(),
        );
    let pw = password.to_string();
    let phc2 = phc.clone();
    let ok = hashing(guard, move || secret::verify_password(&pw, &phc2)).await?;
    let Some(u) = row.filter(|u| ok && u.disabled_ms.is_none()) else {
        if let Some(lock) = locks.failed(user, net, now).await? {
            tracing::warn!(user = %user, %from, lock_s = lock / 1000, "login locked after repeated failures");
        }
        return Err(unauthenticated("wrong user name or password"));
    };
    locks.succeeded(&u.user_id, net).await?;
    if secret::needs_rehash(&phc) {
        let pw = password.to_string();
        if let Ok(Ok(new)) = hashing(guard, move || secret::hash_password(&pw)).await {
            db.users().rehash(&u.user_id, &phc, &new).await?;
            tracing::info!(user = %u.user_id, "password hash raised to today's argon2id parameters");
        }
    }
    let session_id = format!("ses-{}", secret::random_id());
    let (tokens, ah, rh) = new_tokens(&session_id, &u.user_id, u.role);
    let at = UnixMs::from_ms(now);
    db.users()
        .start_session(
            &u.user_id,
            &from.to_string(),
            at.plus_ms(SESSION_TTL_MS),
            &secret::new_form_token(),
            &Issue {
                session_id: &session_id,
                access_hash: &ah,
                access_expires_ms: at.plus_ms(ACCESS_TTL_MS),
                refresh_hash: &rh,
                refresh_expires_ms: at.plus_ms(REFRESH_TTL_MS),
                now_ms: at,
            },
        )
        .await?;
    Ok(tokens)
}

/// What a refresh did.
pub enum Refreshed {
    Tokens(Tokens),
    /// The token had been used before: its whole session is revoked.
    Reused {
        session_id: String,
        user: String,
    },
}

/// Swaps a refresh token for new tokens. A token used a second time
/// (stolen, or replayed) revokes its session: both holders must log in.
/// Ends one session (a logout, or its holder's or an admin's choice,
/// checked by the caller) for `why`; false when it had ended already.
pub async fn revoke_session(
    db: &Db,
    id: &str,
    now_ms: UnixMs,
    why: &str,
) -> Result<bool, crate::Error> {
    db.users().revoke_session(id, now_ms, why).await
}

pub async fn refresh(db: &Db, token: &str) -> Result<Refreshed, AuthError> {
    let now = crate::wallclock::now();
    let bad = || unauthenticated("the refresh token is unknown, expired or revoked; log in again");
    let Some(Bearer::Refresh(t)) = secret::parse_bearer(token) else {
        return Err(bad());
    };
    let h = secret::token_hash(t);
    let r = db.users().refresh_token(&h).await?.ok_or_else(bad)?;
    if r.used_ms.is_some() {
        db.users()
            .revoke_session(&r.session_id, now, "refresh token reused")
            .await?;
        tracing::warn!(session = %r.session_id, user = %r.user_id, "a refresh token was used twice: its session is revoked");
        return Ok(Refreshed::Reused {
            session_id: r.session_id,
            user: r.user_id,
        });
    }
    if r.expires_ms <= now
        || r.session_revoked_ms.is_some()
        || r.session_expires_ms <= now
        || r.user_disabled_ms.is_some()
    {
        return Err(bad());
    }
    let u = db.users().get(&r.user_id).await?.ok_or_else(bad)?;
    let (tokens, ah, rh) = new_tokens(&r.session_id, &u.user_id, u.role);
    let issued = db
        .users()
        .rotate(
            &h,
            &Issue {
                session_id: &r.session_id,
                access_hash: &ah,
                access_expires_ms: now.plus_ms(ACCESS_TTL_MS),
                refresh_hash: &rh,
                refresh_expires_ms: now.plus_ms(REFRESH_TTL_MS).min(r.session_expires_ms),
                now_ms: now,
            },
        )
        .await?;
    if !issued {
        // used by someone else between our read and our write: reuse
        db.users()
            .revoke_session(&r.session_id, now, "refresh token reused")
            .await?;
        return Ok(Refreshed::Reused {
            session_id: r.session_id,
            user: r.user_id,
        });
    }
    Ok(Refreshed::Tokens(tokens))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// While the database cannot answer, a credential it verified is
    /// trusted for 5 minutes, and for a day on `/metrics` (the scraper
    /// must see the outage, not a failed scrape).
    #[test]
    fn a_verified_credential_is_recalled_within_its_window_only() {
        let g = Guard::new(60);
        let p = Principal {
            actor: Actor::ApiKey {
                id: "k1".into(),
                from: IpAddr::from([127, 0, 0, 1]),
            },
            role: Role::Viewer,
            scope: Scope::All,
            kind: PrincipalKind::ApiKey { id: "k1".into() },
        };
        g.remember("h", Some(&p), 0);
        let ten_minutes = 10 * 60_000;
        assert!(g.recall("h", 60_000, STALE_IF_ERROR_MS).is_some());
        assert!(g.recall("h", ten_minutes, STALE_IF_ERROR_MS).is_none());
        assert!(
            g.recall("h", ten_minutes, METRICS_STALE_IF_ERROR_MS)
                .is_some()
        );
        // a refusal is forgotten at once, whatever the window
        g.remember("h", None, ten_minutes);
        assert!(
            g.recall("h", ten_minutes, METRICS_STALE_IF_ERROR_MS)
                .is_none()
        );
    }
}
