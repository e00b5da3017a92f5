//! Users and their sessions in SQL: a session is one login, a family of
//! rotating refresh tokens, with the access tokens issued from it. Only
//! hashes of secrets are stored.

use crate::Error;
use crate::domain::{Role, Scope, UnixMs};
use crate::store::Db;

#[derive(sqlx::FromRow, Clone, Debug)]
pub struct UserRow {
    pub user_id: String,
    pub role: Role,
    pub scope: Scope,
    pub password_hash: String,
    pub disabled_ms: Option<UnixMs>,
    pub created_ms: UnixMs,
    pub updated_ms: UnixMs,
}

#[derive(sqlx::FromRow, Clone, Debug)]
pub struct SessionRow {
    pub session_id: String,
    pub user_id: String,
    pub client: String,
    pub created_ms: UnixMs,
    pub refreshed_ms: UnixMs,
    pub expires_ms: UnixMs,
    pub revoked_ms: Option<UnixMs>,
    pub revoked_reason: Option<String>,
}

/// Who an access token belongs to (only while it, its session and its
/// user are all valid).
#[derive(sqlx::FromRow, Clone, Debug)]
pub struct TokenOwner {
    pub user_id: String,
    pub role: Role,
    pub scope: Scope,
    pub session_id: String,
}

/// What a refresh token was.
#[derive(sqlx::FromRow, Clone, Debug)]
pub struct RefreshRow {
    pub session_id: String,
    pub expires_ms: UnixMs,
    pub used_ms: Option<UnixMs>,
    pub user_id: String,
    pub session_revoked_ms: Option<UnixMs>,
    pub session_expires_ms: UnixMs,
    pub user_disabled_ms: Option<UnixMs>,
}

const USER_COLUMNS: &str =
    "user_id, role, scope, password_hash, disabled_ms, created_ms, updated_ms";
const SESSION_COLUMNS: &str =
    "session_id, user_id, client, created_ms, refreshed_ms, expires_ms, revoked_ms, revoked_reason";

/// New tokens of a session (hashes; the tokens go to the client only).
pub struct Issue<'a> {
    pub session_id: &'a str,
    pub access_hash: &'a str,
    pub access_expires_ms: UnixMs,
    pub refresh_hash: &'a str,
    pub refresh_expires_ms: UnixMs,
    pub now_ms: UnixMs,
}

/// Whose sessions to list: never "all" by accident (an empty name).
#[derive(Debug, Clone, Copy)]
pub enum SessionsOf<'a> {
    All,
    Users(&'a [String]),
}

/// The users aggregate: `db.users()`.
#[derive(Clone, Copy)]
pub struct Users<'a>(&'a Db);

impl Db {
    pub fn users(&self) -> Users<'_> {
        Users(self)
    }
}

impl Users<'_> {
    pub async fn get(&self, id: &str) -> Result<Option<UserRow>, Error> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE user_id = $1");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.0.pool())
            .await?)
    }

    /// By name, after `after` (the page cursor).
    pub async fn list(&self, after: &str, limit: i64) -> Result<Vec<UserRow>, Error> {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users WHERE user_id > $1 ORDER BY user_id LIMIT $2"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(after)
            .bind(limit)
            .fetch_all(self.0.pool())
            .await?)
    }

    /// Adds a user; false if the name is taken.
    pub async fn add(&self, u: &UserRow) -> Result<bool, Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        let n = sqlx::query(
            "INSERT INTO users (user_id, role, scope, password_hash, disabled_ms, created_ms, updated_ms)
             VALUES ($1, $2, $3, $4, NULL, $5, $5) ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(&u.user_id)
        .bind(u.role)
        .bind(&u.scope)
        .bind(&u.password_hash)
        .bind(u.created_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Changes role, scope and/or disabled; `disable` also revokes every
    /// session. False if there is no such user.
    pub async fn update(
        &self,
        id: &str,
        role: Option<Role>,
        scope: Option<&Scope>,
        disabled: Option<bool>,
        now_ms: UnixMs,
    ) -> Result<bool, Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        let n = sqlx::query(
            "UPDATE users SET role = COALESCE($2, role), scope = COALESCE($3, scope),
               disabled_ms = CASE WHEN $4 = 1 THEN COALESCE(disabled_ms, $5) WHEN $4 = 0 THEN NULL ELSE disabled_ms END,
               updated_ms = $5
             WHERE user_id = $1",
        )
        .bind(id)
        .bind(role.map(|r| r.as_str()))
        .bind(scope.map(|s| s.to_string()))
        .bind(disabled.map_or(-1i64, i64::from))
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if disabled == Some(true) || role.is_some() || scope.is_some() {
            // a changed role or scope takes effect now, not at the next refresh
            revoke_sessions_of(&mut tx, id, now_ms, "user changed or disabled").await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Sets a new password hash and ends every session of the user.
    pub async fn set_password(&self, id: &str, hash: &str, now_ms: UnixMs) -> Result<bool, Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        let n =
            sqlx::query("UPDATE users SET password_hash = $2, updated_ms = $3 WHERE user_id = $1")
                .bind(id)
                .bind(hash)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        revoke_sessions_of(&mut tx, id, now_ms, "password reset").await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Replaces a hash made with weaker parameters (after a login).
    pub async fn rehash(&self, id: &str, old: &str, new: &str) -> Result<(), Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        sqlx::query(
            "UPDATE users SET password_hash = $3 WHERE user_id = $1 AND password_hash = $2",
        )
        .bind(id)
        .bind(old)
        .bind(new)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Starts a session with its first tokens.
    pub async fn start_session(
        &self,
        user: &str,
        client: &str,
        expires_ms: UnixMs,
        csrf: &str,
        t: &Issue<'_>,
    ) -> Result<(), Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        // expired access tokens go when someone logs in (they are refused anyway)
        sqlx::query("DELETE FROM access_tokens WHERE expires_ms < $1")
            .bind(t.now_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO auth_sessions (session_id, user_id, client, created_ms, refreshed_ms, expires_ms, csrf)
             VALUES ($1, $2, $3, $4, $4, $5, $6)",
        )
        .bind(t.session_id)
        .bind(user)
        .bind(client)
        .bind(t.now_ms)
        .bind(expires_ms)
        .bind(csrf)
        .execute(&mut *tx)
        .await?;
        issue(&mut tx, t).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The console's form token of a session (empty for a session started
    /// before the console had them).
    pub async fn session_csrf(&self, session_id: &str) -> Result<Option<String>, Error> {
        Ok(
            sqlx::query_scalar("SELECT csrf FROM auth_sessions WHERE session_id = $1")
                .bind(session_id)
                .fetch_optional(self.0.pool())
                .await?,
        )
    }

    /// A refresh token, with its session and user.
    pub async fn refresh_token(&self, hash: &str) -> Result<Option<RefreshRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT r.session_id, r.expires_ms, r.used_ms, s.user_id, s.revoked_ms AS session_revoked_ms,
                    s.expires_ms AS session_expires_ms, u.disabled_ms AS user_disabled_ms
             FROM refresh_tokens r JOIN auth_sessions s ON s.session_id = r.session_id
             JOIN users u ON u.user_id = s.user_id WHERE r.token_hash = $1",
        )
        .bind(hash)
        .fetch_optional(self.0.pool())
        .await?)
    }

    /// Uses a refresh token once and issues the next tokens of its
    /// session. False when it was used meanwhile (a race: the caller
    /// treats it as reuse).
    pub async fn rotate(&self, used_hash: &str, t: &Issue<'_>) -> Result<bool, Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        let n = sqlx::query(
            "UPDATE refresh_tokens SET used_ms = $2 WHERE token_hash = $1 AND used_ms IS NULL",
        )
        .bind(used_hash)
        .bind(t.now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            return Ok(false);
        }
        sqlx::query("UPDATE auth_sessions SET refreshed_ms = $2 WHERE session_id = $1")
            .bind(t.session_id)
            .bind(t.now_ms)
            .execute(&mut *tx)
            .await?;
        issue(&mut tx, t).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The owner of a valid access token.
    pub async fn token_owner(
        &self,
        hash: &str,
        now_ms: UnixMs,
    ) -> Result<Option<TokenOwner>, Error> {
        Ok(sqlx::query_as(
            "SELECT u.user_id, u.role, u.scope, s.session_id FROM access_tokens a
             JOIN auth_sessions s ON s.session_id = a.session_id JOIN users u ON u.user_id = s.user_id
             WHERE a.token_hash = $1 AND a.expires_ms > $2 AND s.revoked_ms IS NULL AND s.expires_ms > $2
               AND u.disabled_ms IS NULL",
        )
        .bind(hash)
        .bind(now_ms)
        .fetch_optional(self.0.pool())
        .await?)
    }

    pub async fn session(&self, id: &str) -> Result<Option<SessionRow>, Error> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM auth_sessions WHERE session_id = $1");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.0.pool())
            .await?)
    }

    /// Sessions, newest first, of everyone or of the users named (none
    /// named: none); only live ones unless `live_at` is `None`.
    pub async fn sessions(
        &self,
        of: SessionsOf<'_>,
        live_at: Option<UnixMs>,
        before_ms: UnixMs,
        limit: i64,
    ) -> Result<Vec<SessionRow>, Error> {
        let users = match of {
            SessionsOf::All => None,
            SessionsOf::Users(u) => Some(u),
        };
        let mut sql = format!(
            "SELECT {SESSION_COLUMNS} FROM auth_sessions
             WHERE ($1 < 0 OR (revoked_ms IS NULL AND expires_ms > $1)) AND created_ms < $2"
        );
        sql.push_str(&super::site_in("user_id", users, 4));
        sql.push_str(" ORDER BY created_ms DESC LIMIT $3");
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(live_at.map_or(-1, UnixMs::ms))
            .bind(before_ms)
            .bind(limit);
        for u in users.unwrap_or_default() {
            q = q.bind(u.clone());
        }
        Ok(q.fetch_all(self.0.pool()).await?)
    }

    /// Revokes one session (and so all its tokens). False if it was
    /// already revoked or does not exist.
    pub async fn revoke_session(
        &self,
        id: &str,
        now_ms: UnixMs,
        reason: &str,
    ) -> Result<bool, Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        let n = sqlx::query(
            "UPDATE auth_sessions SET revoked_ms = $2, revoked_reason = $3 WHERE session_id = $1 AND revoked_ms IS NULL",
        )
        .bind(id)
        .bind(now_ms)
        .bind(reason)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM access_tokens WHERE session_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(n == 1)
    }
}

async fn issue(c: &mut sqlx::AnyConnection, t: &Issue<'_>) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO access_tokens (token_hash, session_id, expires_ms) VALUES ($1, $2, $3)",
    )
    .bind(t.access_hash)
    .bind(t.session_id)
    .bind(t.access_expires_ms)
    .execute(&mut *c)
    .await?;
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, session_id, issued_ms, expires_ms) VALUES ($1, $2, $3, $4)",
    )
    .bind(t.refresh_hash)
    .bind(t.session_id)
    .bind(t.now_ms)
    .bind(t.refresh_expires_ms)
    .execute(&mut *c)
    .await?;
    Ok(())
}

async fn revoke_sessions_of(
    c: &mut sqlx::AnyConnection,
    user: &str,
    now_ms: UnixMs,
    reason: &str,
) -> Result<(), Error> {
    sqlx::query(
        "DELETE FROM access_tokens WHERE session_id IN (SELECT session_id FROM auth_sessions WHERE user_id = $1)",
    )
    .bind(user)
    .execute(&mut *c)
    .await?;
    sqlx::query(
        "UPDATE auth_sessions SET revoked_ms = $2, revoked_reason = $3 WHERE user_id = $1 AND revoked_ms IS NULL",
    )
    .bind(user)
    .bind(now_ms)
    .bind(reason)
    .execute(&mut *c)
    .await?;
    Ok(())
}
