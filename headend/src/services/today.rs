//! Today: the exceptions that need a person first, each from the service
//! its own page reads (the brief's "top at-risk sites" widget). Every
//! list is bounded and in the caller's scope.

use super::inventory;
use super::{Context, Result, Sessions};
use crate::domain::CommandState;
use crate::domain::forecast::Risk;
use crate::domain::inventory::FreshnessKind;
use crate::store::certs::CertStatusRow;
use crate::store::devices::DeviceDownRow;
use crate::store::escalations::{EscFilter, EscalationRow};
use crate::store::inventory::{StateRow, TankFilter, TankRow};

/// Most lines of each list.
pub const LINES: i64 = 50;
/// A certificate expiring within this is listed, ms (14 days).
pub const CERT_WARNING_MS: i64 = 14 * 86_400_000;
/// Failed commands this recent are listed, ms (a day).
pub const FAILED_WITHIN_MS: i64 = 86_400_000;

/// What Today shows.
pub struct Today {
    /// Critical, then high risk (a runout before the next delivery).
    pub at_risk: Vec<(TankRow, Option<StateRow>)>,
    /// Tanks without a fresh reading.
    pub stale: Vec<(TankRow, Option<StateRow>)>,
    /// Open escalations, oldest first.
    pub escalations: Vec<EscalationRow>,
    /// Sites with no agent session on any replica.
    pub disconnected: Vec<super::sites::SiteView>,
    pub devices_down: Vec<DeviceDownRow>,
    /// Commands that failed in the last day, newest first.
    pub failed: Vec<super::commands::CommandView>,
    pub expiring: Vec<CertStatusRow>,
}

pub async fn today(ctx: &Context, sessions: &Sessions, now_ms: i64) -> Result<Today> {
    let tanks = |risk: Option<Risk>, freshness: Option<FreshnessKind>| TankFilter {
        risk,
        freshness,
        limit: LINES,
        ..Default::default()
    };
    let mut at_risk = inventory::tanks(ctx, tanks(Some(Risk::Critical), None)).await?;
    at_risk.extend(inventory::tanks(ctx, tanks(Some(Risk::High), None)).await?);
    at_risk.truncate(LINES as usize);
    let stale = inventory::tanks(ctx, tanks(None, Some(FreshnessKind::Stale))).await?;
    let mut escalations = super::escalations::list(
        ctx,
        EscFilter {
            open: true,
            limit: LINES,
            ..Default::default()
        },
    )
    .await?;
    escalations.sort_by_key(|e| e.opened_ms);
    let mut disconnected = super::sites::list(ctx, sessions, None).await?;
    disconnected.retain(|s| !s.connected());
    disconnected.truncate(LINES as usize);
    let sites = ctx.scope.sites();
    let devices_down = ctx.db.devices_down(sites.as_deref(), LINES).await?;
    let mut failed =
        super::commands::list(ctx, None, Some(CommandState::Failed.as_str()), LINES, None).await?;
    failed.retain(|c| now_ms - c.row.updated_ms.ms() <= FAILED_WITHIN_MS);
    let expiring = ctx
        .db
        .certs()
        .expiring(
            crate::domain::UnixMs::from_ms(now_ms + CERT_WARNING_MS),
            sites.as_deref(),
            LINES,
        )
        .await?;
    Ok(Today {
        at_risk,
        stale,
        escalations,
        disconnected,
        devices_down,
        failed,
        expiring,
    })
}
