//! A site's alarm rules in SQL: the severities it gives alarm types (a
//! type without a row keeps `AlarmType::default_severity`). An episode
//! takes its severity when it is raised; changing the rule later does not
//! re-grade episodes already raised.

use sqlx::AnyConnection;

use crate::Error;
use crate::domain::SiteId;
use crate::domain::alarm::{AlarmType, Severity};
use crate::store::Db;

#[derive(Clone, Copy)]
pub struct AlarmRules<'a>(&'a Db);

impl Db {
    pub fn alarm_rules(&self) -> AlarmRules<'_> {
        AlarmRules(self)
    }
}

/// The severity of an alarm of `kind` raised at `site` now, in the
/// caller's transaction.
pub async fn severity_in(
    c: &mut AnyConnection,
    site: &SiteId,
    kind: AlarmType,
) -> Result<Severity, Error> {
    let own: Option<Severity> = sqlx::query_scalar(
        "SELECT severity FROM alarm_severities WHERE site_id = $1 AND alarm_type = $2",
    )
    .bind(site)
    .bind(kind)
    .fetch_optional(&mut *c)
    .await?;
    Ok(own.unwrap_or(kind.default_severity()))
}

impl AlarmRules<'_> {
    /// The site's own severities (types it changed from the default).
    pub async fn severities(&self, site: &SiteId) -> Result<Vec<(AlarmType, Severity)>, Error> {
        Ok(sqlx::query_as(
            "SELECT alarm_type, severity FROM alarm_severities WHERE site_id = $1 ORDER BY alarm_type",
        )
        .bind(site)
        .fetch_all(self.0.pool())
        .await?)
    }

    /// Replaces the site's own severities.
    pub async fn set_severities(
        &self,
        site: &SiteId,
        list: &[(AlarmType, Severity)],
    ) -> Result<(), Error> {
        let (_w, mut tx) = self.0.begin_write().await?;
        sqlx::query("DELETE FROM alarm_severities WHERE site_id = $1")
            .bind(site)
            .execute(&mut *tx)
            .await?;
        for (t, s) in list {
            sqlx::query(
                "INSERT INTO alarm_severities (site_id, alarm_type, severity) VALUES ($1, $2, $3)",
            )
            .bind(site)
            .bind(*t)
            .bind(*s)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
