//! The alarm workflow a person drives: list and read episodes, acknowledge
//! (once, with a note), shelve for a time with a reason, unshelve, add
//! notes. Only the device clears an alarm ([`crate::store::alarms::apply`]).

use crate::domain::SiteId;
use serde::Deserialize;

use super::{Context, Refused, Result, invalid, refused};
use crate::domain::alarm::{self, AlarmState, Severity};
use crate::store::alarms::{AlarmEventRow, AlarmFilter, EpisodeRow};
use crate::wallclock::now_ms;

/// `POST /api/v1/alarms/{id}/acknowledge`.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    #[serde(default)]
    pub note: String,
}

/// `POST /api/v1/alarms/{id}/shelve`: until a time (RFC 3339 or Unix ms),
/// at most 7 days ahead, with a reason.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShelveRequest {
    #[schema(value_type = String)]
    pub until: serde_json::Value,
    pub reason: String,
}

/// `POST /api/v1/alarms/{id}/notes`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlarmNoteRequest {
    pub note: String,
}

/// What a list asks for.
#[derive(Debug, Default, Clone)]
pub struct ListQuery {
    pub site: Option<String>,
    pub asset: Option<String>,
    pub state: Option<AlarmState>,
    pub severity: Option<Severity>,
    pub before: Option<(i64, String)>,
    pub limit: i64,
}

fn not_found(id: &str) -> super::ServiceError {
    refused(Refused::NotFound, "", format!("no alarm {id:?}"))
}

fn text(field: &str, v: &str, required: bool) -> Result<String> {
    let v = v.trim();
    if required && v.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if v.chars().count() > 2_000 {
        return Err(invalid(field, "at most 2000 characters"));
    }
    Ok(v.to_string())
}

fn conflict(e: alarm::Refused) -> super::ServiceError {
    refused(Refused::Conflict, "", e.to_string())
}

pub async fn list(ctx: &Context, q: &ListQuery) -> Result<Vec<EpisodeRow>> {
    if let Some(site) = &q.site {
        ctx.visible(site, "site", || format!("no site {site:?}"))?;
    }
    let sites = ctx.scope.sites();
    Ok(ctx
        .db
        .alarms()
        .list(&AlarmFilter {
            site: q.site.as_deref(),
            asset: q.asset.as_deref(),
            state: q.state,
            severity: q.severity,
            sites: sites.as_deref(),
            before: q.before.as_ref().map(|(ms, id)| (*ms, id.as_str())),
            limit: q.limit,
            now_ms: crate::wallclock::now(),
        })
        .await?)
}

pub async fn get(ctx: &Context, id: &str) -> Result<(EpisodeRow, Vec<AlarmEventRow>)> {
    let e = ctx
        .db
        .alarms()
        .get(id)
        .await?
        .ok_or_else(|| not_found(id))?;
    ctx.visible(&e.site_id, "", || format!("no alarm {id:?}"))?;
    let events = ctx.db.alarms().events(id).await?;
    Ok((e, events))
}

async fn reread(ctx: &Context, id: &str) -> Result<EpisodeRow> {
    ctx.db.alarms().get(id).await?.ok_or_else(|| not_found(id))
}

pub async fn acknowledge(
    ctx: &Context,
    id: &str,
    r: AckRequest,
    actor: &str,
) -> Result<EpisodeRow> {
    let (e, _) = get(ctx, id).await?;
    alarm::may_acknowledge(&e.facts()).map_err(conflict)?;
    let note = text("note", &r.note, false)?;
    if !ctx
        .db
        .alarms()
        .acknowledge(id, actor, &note, now_ms())
        .await?
    {
        return Err(conflict(alarm::Refused::AlreadyAcknowledged));
    }
    reread(ctx, id).await
}

pub async fn shelve(ctx: &Context, id: &str, r: ShelveRequest, actor: &str) -> Result<EpisodeRow> {
    let (e, _) = get(ctx, id).await?;
    let until = super::time_value("until", &r.until)?;
    let reason = text("reason", &r.reason, true)?;
    let now = now_ms();
    match alarm::may_shelve(&e.facts(), until, now) {
        Ok(()) => {}
        Err(alarm::Refused::ShelfOutOfRange) => {
            return Err(invalid(
                "until",
                alarm::Refused::ShelfOutOfRange.to_string(),
            ));
        }
        Err(other) => return Err(conflict(other)),
    }
    if !ctx
        .db
        .alarms()
        .shelve(id, actor, until, &reason, now)
        .await?
    {
        return Err(conflict(alarm::Refused::Cleared));
    }
    reread(ctx, id).await
}

pub async fn unshelve(ctx: &Context, id: &str, actor: &str) -> Result<EpisodeRow> {
    let (e, _) = get(ctx, id).await?;
    let now = now_ms();
    alarm::may_unshelve(&e.facts(), now).map_err(conflict)?;
    if !ctx.db.alarms().unshelve(id, actor, now).await? {
        return Err(conflict(alarm::Refused::NotShelved));
    }
    reread(ctx, id).await
}

pub async fn add_note(
    ctx: &Context,
    id: &str,
    r: AlarmNoteRequest,
    actor: &str,
) -> Result<EpisodeRow> {
    get(ctx, id).await?;
    let note = text("note", &r.note, true)?;
    ctx.db.alarms().note(id, actor, &note, now_ms()).await?;
    reread(ctx, id).await
}

/// `PUT /api/v1/sites/{site}/alarm-recipients`: who is mailed about the
/// site's alarms, each at or above a severity (the list replaces the old).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientsRequest {
    pub recipients: Vec<RecipientRequest>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientRequest {
    pub address: String,
    /// critical | major | minor | warning: this severity and above.
    #[schema(value_type = String)]
    pub min_severity: Severity,
}

/// The most recipients a site takes.
pub const MAX_RECIPIENTS: usize = 50;

pub async fn recipients(
    ctx: &Context,
    site: &SiteId,
) -> Result<Vec<crate::domain::notify::Recipient>> {
    super::inventory::site(ctx, site).await?;
    Ok(ctx.db.mail().recipients(site).await?)
}

pub async fn set_recipients(
    ctx: &Context,
    site: &SiteId,
    r: RecipientsRequest,
) -> Result<Vec<crate::domain::notify::Recipient>> {
    super::inventory::site(ctx, site).await?;
    if r.recipients.len() > MAX_RECIPIENTS {
        return Err(invalid("recipients", format!("at most {MAX_RECIPIENTS}")));
    }
    let mut list: Vec<crate::domain::notify::Recipient> = Vec::new();
    for (i, x) in r.recipients.into_iter().enumerate() {
        let address = crate::domain::notify::address(&x.address)
            .map_err(|e| invalid(&format!("recipients[{i}].address"), e))?;
        if list
            .iter()
            .any(|y| y.address.eq_ignore_ascii_case(&address))
        {
            return Err(invalid(
                &format!("recipients[{i}].address"),
                format!("{address} is listed twice"),
            ));
        }
        list.push(crate::domain::notify::Recipient {
            address,
            min_severity: x.min_severity,
        });
    }
    ctx.db.mail().set_recipients(site, &list).await?;
    Ok(list)
}

/// `PUT /api/v1/sites/{site}/alarm-severities`: the site's own severity
/// per alarm type (the list replaces the old; a type not listed keeps the
/// fuel domain's default). Episodes take their severity when raised.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeveritiesRequest {
    pub severities: Vec<SeverityRequest>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeverityRequest {
    /// An alarm type (leak, overfill, high_water, device_offline, ...).
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub alarm_type: crate::domain::alarm::AlarmType,
    /// critical | major | minor | warning
    #[schema(value_type = String)]
    pub severity: Severity,
}

/// Every alarm type with the severity it has at the site, and whether
/// that is the default.
pub async fn severities(
    ctx: &Context,
    site: &SiteId,
) -> Result<Vec<(crate::domain::alarm::AlarmType, Severity, bool)>> {
    super::inventory::site(ctx, site).await?;
    let own = ctx.db.alarm_rules().severities(site).await?;
    Ok(crate::domain::alarm::AlarmType::ALL
        .iter()
        .map(|t| match own.iter().find(|(o, _)| o == t) {
            Some((_, s)) => (*t, *s, false),
            None => (*t, t.default_severity(), true),
        })
        .collect())
}

pub async fn set_severities(
    ctx: &Context,
    site: &SiteId,
    r: SeveritiesRequest,
) -> Result<Vec<(crate::domain::alarm::AlarmType, Severity, bool)>> {
    super::inventory::site(ctx, site).await?;
    let mut list: Vec<(crate::domain::alarm::AlarmType, Severity)> = Vec::new();
    for (i, x) in r.severities.into_iter().enumerate() {
        if list.iter().any(|(t, _)| *t == x.alarm_type) {
            return Err(invalid(
                &format!("severities[{i}].type"),
                format!("{} is listed twice", x.alarm_type),
            ));
        }
        // a type set to its default is no rule of the site's own
        if x.severity != x.alarm_type.default_severity() {
            list.push((x.alarm_type, x.severity));
        }
    }
    ctx.db.alarm_rules().set_severities(site, &list).await?;
    severities(ctx, site).await
}
