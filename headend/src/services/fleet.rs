//! The fleet's health in a few numbers, for `/metrics` (alert rules page
//! on them, issue 36): sites, how many are connected to any replica, how
//! many are silent, devices down, certificates expiring. Read from the
//! database at each scrape, so every replica reports the same fleet.

use super::{Context, Result, Sessions};

/// A site without a session whose last data is older than this is
/// silent, ms (15 minutes).
pub const SILENT_AFTER_MS: i64 = 15 * 60_000;
/// Most rows counted per figure (a count beyond says "at least").
const COUNT_LIMIT: i64 = 100_000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fleet {
    pub sites: i64,
    /// With an agent session on any replica.
    pub connected: i64,
    /// Without a session, and no data for [`SILENT_AFTER_MS`].
    pub silent: i64,
    pub devices_down: i64,
    /// Certificates in use expiring within 14 days (Today's rule).
    pub certificates_expiring: i64,
    /// Commands that ended `failed` in the last hour (a write the device
    /// refused, could not be reached for, or read back otherwise).
    pub commands_failed: i64,
}

/// The window of [`Fleet::commands_failed`], ms (one hour).
pub const FAILED_WITHIN_MS: i64 = 3_600_000;

pub async fn fleet(ctx: &Context, sessions: &Sessions, now_ms: i64) -> Result<Fleet> {
    let sites = super::sites::list(ctx, sessions, None).await?;
    let connected = sites.iter().filter(|s| s.connected()).count() as i64;
    let silent = sites
        .iter()
        .filter(|s| !s.connected() && now_ms - s.row.last_seen_ms.ms() > SILENT_AFTER_MS)
        .count() as i64;
    let scope = ctx.scope.sites();
    let devices_down = ctx
        .db
        .devices_down(scope.as_deref(), COUNT_LIMIT)
        .await?
        .len() as i64;
    let certificates_expiring = ctx
        .db
        .certs()
        .expiring(
            crate::domain::UnixMs::from_ms(now_ms + super::today::CERT_WARNING_MS),
            scope.as_deref(),
            COUNT_LIMIT,
        )
        .await?
        .len() as i64;
    let commands_failed = ctx
        .db
        .commands()
        .count_since(
            crate::domain::CommandState::Failed,
            now_ms - FAILED_WITHIN_MS,
            scope.as_deref(),
        )
        .await?;
    Ok(Fleet {
        commands_failed,
        sites: sites.len() as i64,
        connected,
        silent,
        devices_down,
        certificates_expiring,
    })
}
