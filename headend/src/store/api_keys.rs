//! API keys for integrations in SQL: the secret's hash, a role, an
//! optional site scope, an expiry, the last use and a revocation.

use crate::Error;
use crate::domain::{Actor, Role, Scope, UnixMs};
use crate::store::Db;

#[derive(sqlx::FromRow, Clone, Debug)]
pub struct ApiKeyRow {
    pub key_id: String,
    pub name: String,
    pub secret_hash: String,
    pub role: Role,
    pub scope: Scope,
    pub created_by: Actor,
    pub created_ms: UnixMs,
    pub expires_ms: Option<UnixMs>,
    pub last_used_ms: Option<UnixMs>,
    pub revoked_ms: Option<UnixMs>,
}

const COLUMNS: &str = "key_id, name, secret_hash, role, scope, created_by, created_ms, expires_ms, last_used_ms, revoked_ms";

/// A key's last use is written at most this often, ms (not one write
/// per request).
pub const LAST_USED_STEP_MS: i64 = 60_000;

/// The API keys: `db.api_keys()`.
#[derive(Clone, Copy)]
pub struct ApiKeys<'a>(&'a Db);

impl Db {
    pub fn api_keys(&self) -> ApiKeys<'_> {
        ApiKeys(self)
    }
}

impl ApiKeys<'_> {
    pub async fn get(&self, id: &str) -> Result<Option<ApiKeyRow>, Error> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE key_id = $1");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.0.pool())
            .await?)
    }

    /// Newest first, before `before_ms` (the page cursor).
    pub async fn list(&self, before_ms: UnixMs, limit: i64) -> Result<Vec<ApiKeyRow>, Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM api_keys WHERE created_ms < $1 ORDER BY created_ms DESC, key_id LIMIT $2"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(before_ms)
            .bind(limit)
            .fetch_all(self.0.pool())
            .await?)
    }

    pub async fn add(&self, k: &ApiKeyRow) -> Result<(), Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        sqlx::query(
            "INSERT INTO api_keys (key_id, name, secret_hash, role, scope, created_by, created_ms, expires_ms, last_used_ms, revoked_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL)",
        )
        .bind(&k.key_id)
        .bind(&k.name)
        .bind(&k.secret_hash)
        .bind(k.role)
        .bind(&k.scope)
        .bind(&k.created_by)
        .bind(k.created_ms)
        .bind(k.expires_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// False if there is no such key or it was already revoked.
    pub async fn revoke(&self, id: &str, now_ms: UnixMs) -> Result<bool, Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        let n = sqlx::query(
            "UPDATE api_keys SET revoked_ms = $2 WHERE key_id = $1 AND revoked_ms IS NULL",
        )
        .bind(id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Records a use, at most once per [`LAST_USED_STEP_MS`].
    pub async fn touch(&self, id: &str, now_ms: UnixMs) -> Result<(), Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        sqlx::query(
            "UPDATE api_keys SET last_used_ms = $2 WHERE key_id = $1 AND (last_used_ms IS NULL OR last_used_ms < $3)",
        )
        .bind(id)
        .bind(now_ms)
        .bind(now_ms.plus_ms(-LAST_USED_STEP_MS))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
