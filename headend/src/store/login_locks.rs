//! Login failures in SQL, per user name and client network
//! ([`crate::domain::throttle`] decides the lock): shared by every replica,
//! lifted by an admin everywhere at once. A row is forgotten a day after
//! its last failure, so a flood of names from many networks cannot grow
//! the table without bound for long.

use std::net::IpAddr;

use crate::Error;
use crate::domain::throttle::{FORGET_AFTER_MS, lock_after_failures};
use crate::store::Db;

/// The login locks: `db.login_locks()`.
#[derive(Clone, Copy)]
pub struct LoginLocks<'a>(&'a Db);

impl Db {
    pub fn login_locks(&self) -> LoginLocks<'_> {
        LoginLocks(self)
    }
}

impl LoginLocks<'_> {
    /// How long `user` stays locked from `net`, ms (None: not locked).
    pub async fn locked_for(
        &self,
        user: &str,
        net: IpAddr,
        now_ms: i64,
    ) -> Result<Option<i64>, Error> {
        let until: Option<i64> = sqlx::query_scalar(
            "SELECT locked_until_ms FROM login_failures WHERE user_id = $1 AND net = $2",
        )
        .bind(user)
        .bind(net.to_string())
        .fetch_optional(self.0.pool())
        .await?;
        Ok(until.map(|u| u - now_ms).filter(|left| *left > 0))
    }

    /// Records a failure; the lock it starts, ms, if any.
    pub async fn failed(&self, user: &str, net: IpAddr, now_ms: i64) -> Result<Option<i64>, Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        sqlx::query("DELETE FROM login_failures WHERE seen_ms < $1")
            .bind(now_ms - FORGET_AFTER_MS)
            .execute(&mut *tx)
            .await?;
        let count: i64 = sqlx::query_scalar(
            "INSERT INTO login_failures (user_id, net, failures, locked_until_ms, seen_ms) VALUES ($1, $2, 1, 0, $3)
             ON CONFLICT (user_id, net) DO UPDATE SET failures = login_failures.failures + 1, seen_ms = excluded.seen_ms
             RETURNING failures",
        )
        .bind(user)
        .bind(net.to_string())
        .bind(now_ms)
        .fetch_one(&mut *tx)
        .await?;
        let lock = lock_after_failures(u32::try_from(count).unwrap_or(u32::MAX));
        if let Some(ms) = lock {
            sqlx::query(
                "UPDATE login_failures SET locked_until_ms = $3 WHERE user_id = $1 AND net = $2",
            )
            .bind(user)
            .bind(net.to_string())
            .bind(now_ms + ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(lock)
    }

    /// A success clears `user`'s failures from `net`.
    pub async fn succeeded(&self, user: &str, net: IpAddr) -> Result<(), Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        sqlx::query("DELETE FROM login_failures WHERE user_id = $1 AND net = $2")
            .bind(user)
            .bind(net.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Lifts every lock on `user` (an admin's unlock, a password reset):
    /// how many networks had failures.
    pub async fn unlock(&self, user: &str) -> Result<u64, Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        let n = sqlx::query("DELETE FROM login_failures WHERE user_id = $1")
            .bind(user)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n)
    }
}
