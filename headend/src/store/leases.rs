//! Job leases: one row per job in `job_leases`, held by one replica until
//! its time runs out (the rules are in `jobs::lease`).

use crate::Error;
use crate::store::Db;

pub struct Leases<'a>(&'a Db);

impl Db {
    pub fn leases(&self) -> Leases<'_> {
        Leases(self)
    }
}

impl Leases<'_> {
    /// Takes `job` for `holder` until `until_ms`, or renews it; false when
    /// another holder's lease runs past `now_ms`.
    pub async fn hold(
        &self,
        job: &str,
        holder: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<bool, Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        let n = sqlx::query(
            "INSERT INTO job_leases (job, holder, until_ms) VALUES ($1, $2, $3)
             ON CONFLICT (job) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms
             WHERE job_leases.until_ms < $4 OR job_leases.holder = excluded.holder",
        )
        .bind(job)
        .bind(holder)
        .bind(until_ms)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Gives `job` up if `holder` has it.
    pub async fn release(&self, job: &str, holder: &str) -> Result<(), Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        sqlx::query("DELETE FROM job_leases WHERE job = $1 AND holder = $2")
            .bind(job)
            .bind(holder)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
