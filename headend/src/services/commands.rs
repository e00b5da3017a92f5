//! Submitting, reading and cancelling commands: a setpoint to an asset, a
//! site-level setpoint split across its assets ([`crate::domain::split`]),
//! or an ETA push for a load.

use serde::{Deserialize, Serialize};

use super::{Context, Refused, Result, invalid, refused};
use crate::domain::{
    Actor, AssetId, CommandId, CommandKind, CommandState, LoadId, SiteId, UnixMs, split,
};
use crate::store::commands::{CommandRow, EtaPayload, EventRow, NewCommand, Submitted};
use crate::store::loads::{LoadRow, LoadWrite};
use crate::store::sites::Writable;
use crate::wallclock::now_ms;

/// Default expiry of a command, s.
pub const DEFAULT_EXPIRY_S: i64 = 3600;
/// Longest expiry and duration accepted, s (7 days).
pub const MAX_EXPIRY_S: i64 = 7 * 24 * 3600;
/// An asset with no good reading for this long is offline for a split, ms.
pub const ONLINE_WINDOW_MS: i64 = 5 * 60 * 1000;
/// Rounding step of a split: from this...
const MIN_STEP: f64 = 1e-6;
/// ...to this.
const MAX_STEP: f64 = 1e6;

/// `POST /api/v1/commands`: what to do is the `kind`, and each kind takes
/// its own fields (an unknown kind or a field of the other kind is refused,
/// naming it). Its OpenAPI schema is written by `api::openapi` (a `oneOf`
/// with its discriminator).
#[derive(Debug, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CommandRequest {
    /// A setpoint for one asset, or a site-level one split across the
    /// site's assets.
    Setpoint(SetpointRequest),
    /// The ETA of a load, pushed to its site's agent.
    Eta(EtaRequest),
}

/// `kind: setpoint`.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetpointRequest {
    /// The site of a site-level setpoint (split across its assets).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub site: Option<SiteId>,
    /// `asset` or `site/asset`; wins over `site`.
    #[serde(default)]
    pub asset: Option<String>,
    /// The writable point (e.g. `power_limit`).
    pub field: String,
    pub value: f64,
    /// How long the setpoint holds before the agent restores the default, s.
    #[serde(default)]
    pub duration_s: Option<f64>,
    #[serde(default)]
    pub expires_in_s: Option<i64>,
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Rounding step of a site-level split. Default 0.1.
    #[serde(default)]
    pub step: Option<f64>,
    #[serde(default, skip_serializing)]
    pub idempotency_key: Option<String>,
}

/// `kind: eta`.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EtaRequest {
    #[schema(value_type = String)]
    pub load_id: LoadId,
    #[serde(default)]
    pub expires_in_s: Option<i64>,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default, skip_serializing)]
    pub idempotency_key: Option<String>,
}

impl CommandRequest {
    /// The idempotency key given in the body, if any.
    pub fn idempotency_key(&self) -> Option<String> {
        match self {
            CommandRequest::Setpoint(r) => r.idempotency_key.clone(),
            CommandRequest::Eta(r) => r.idempotency_key.clone(),
        }
    }

    /// The expiry as given: `expires_in_s`, `expires_at`.
    pub fn expiry_given(&self) -> (Option<i64>, Option<&str>) {
        match self {
            CommandRequest::Setpoint(r) => (r.expires_in_s, r.expires_at.as_deref()),
            CommandRequest::Eta(r) => (r.expires_in_s, r.expires_at.as_deref()),
        }
    }
}

/// A command as the API shows it: the row, its children (a split) and
/// its timeline (when asked for).
pub struct CommandView {
    pub row: CommandRow,
    pub children: Vec<CommandRow>,
    pub timeline: Vec<EventRow>,
}

/// What a submit did.
pub enum Outcome {
    Created(CommandView),
    /// The same request with the same idempotency key: the first command.
    Repeated(CommandView),
}

/// When a command expires: `expires_in_s` or `expires_at`, else the
/// default; within 7 days of `now`.
pub fn expiry(
    now: i64,
    expires_in_s: Option<i64>,
    expires_at: Option<&str>,
    default_s: i64,
) -> Result<UnixMs> {
    let at = match (expires_in_s, expires_at) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "expires_at",
                "give expires_at or expires_in_s, not both",
            ));
        }
        (Some(s), None) => {
            if !(1..=MAX_EXPIRY_S).contains(&s) {
                return Err(invalid(
                    "expires_in_s",
                    format!("must be from 1 to {MAX_EXPIRY_S} (7 days), got {s}"),
                ));
            }
            now + s * 1000
        }
        (None, Some(t)) => crate::domain::time::parse(t)
            .ok_or_else(|| invalid("expires_at", format!("{t:?}: {}", crate::domain::time::HOW)))?,
        (None, None) => now + default_s * 1000,
    };
    if at <= now {
        return Err(invalid("expires_at", "is in the past"));
    }
    // a minute of slack for the client's clock
    if at > now + (MAX_EXPIRY_S + 60) * 1000 {
        return Err(invalid(
            "expires_at",
            format!("must be within {MAX_EXPIRY_S} s (7 days) from now"),
        ));
    }
    Ok(UnixMs::from_ms(at))
}

/// The idempotency key: the body's or the `Idempotency-Key` header's.
pub fn idempotency_key(header: Option<String>, body: Option<String>) -> Result<Option<String>> {
    let key = match (header, body) {
        (Some(h), Some(b)) if h != b => {
            return Err(invalid(
                "idempotency_key",
                "differs from the Idempotency-Key header; give one",
            ));
        }
        (h, b) => h.or(b),
    };
    if key.as_ref().is_some_and(|k| k.is_empty() || k.len() > 200) {
        return Err(invalid("idempotency_key", "must be 1 to 200 characters"));
    }
    Ok(key)
}

/// Resolves `asset` (`site/asset` or a bare id unique across sites, or
/// disambiguated by `site`) to (site, asset).
async fn resolve_asset(
    ctx: &Context,
    asset: &str,
    site: Option<&SiteId>,
) -> Result<(SiteId, String)> {
    if let Some((site, a)) = asset.split_once('/') {
        let site = SiteId::parse(site).map_err(|e| invalid("asset", e.to_string()))?;
        let a = AssetId::parse(a).map_err(|e| invalid("asset", e.to_string()))?;
        ctx.visible(&site, "asset", || {
            format!("site {site:?} has no asset {a:?}")
        })?;
        if !ctx.db.sites_with_asset(&a).await?.contains(&site) {
            return Err(refused(
                Refused::NotFound,
                "asset",
                format!("site {site:?} has no asset {a:?}"),
            ));
        }
        return Ok((site, a.into_string()));
    }
    let asset = AssetId::parse(asset).map_err(|e| invalid("asset", e.to_string()))?;
    // sites outside the caller's scope do not exist for it
    let sites: Vec<SiteId> = ctx
        .db
        .sites_with_asset(&asset)
        .await?
        .into_iter()
        .filter(|s| ctx.scope.covers(s))
        .collect();
    match (sites.as_slice(), site) {
        ([], _) => Err(refused(
            Refused::NotFound,
            "asset",
            format!("no site has an asset {asset:?}"),
        )),
        ([one], _) => Ok((one.clone(), asset.to_string())),
        (many, Some(site)) if many.contains(site) => Ok((site.clone(), asset.to_string())),
        (many, _) => Err(invalid(
            "asset",
            format!(
                "{asset:?} exists at several sites ({}); write it as SITE/{asset}",
                many.iter()
                    .map(SiteId::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

async fn writable_of(ctx: &Context, site: &SiteId, asset: &str) -> Result<Vec<Writable>> {
    Ok(ctx
        .db
        .writable_points(site)
        .await?
        .into_iter()
        .find(|(a, _, _)| a == asset)
        .map(|(_, _, w)| w)
        .unwrap_or_default())
}

/// A command's fields before it has its id and target.
#[derive(Clone)]
struct Template {
    idempotency_key: Option<String>,
    request: String,
    kind: CommandKind,
    field: String,
    value: Option<f64>,
    duration_ms: i64,
    expires_at_ms: UnixMs,
    payload: String,
    policy_version: String,
    created_by: Actor,
}

impl Template {
    fn at(self, command_id: CommandId, site_id: SiteId, asset_id: String) -> NewCommand {
        NewCommand {
            command_id,
            idempotency_key: self.idempotency_key,
            request: self.request,
            parent_id: None,
            site_id,
            asset_id,
            kind: self.kind,
            field: self.field,
            value: self.value,
            duration_ms: self.duration_ms,
            expires_at_ms: self.expires_at_ms,
            payload: self.payload,
            load_id: None,
            policy_version: self.policy_version,
            warnings: "[]".into(),
            created_by: self.created_by,
        }
    }
}

/// A new command's id.
pub(crate) fn new_command_id() -> CommandId {
    CommandId::generated(fastrand::u64(..))
}

/// A site-level setpoint's plan: which assets would get what share of
/// `value` of `field` (clamped to each point's limits, offline assets
/// left out), and the candidates it was made from (their limits). The
/// split preview shows this; a submit sends it.
pub async fn split_plan(
    ctx: &Context,
    site: &SiteId,
    field: &str,
    value: f64,
    step: Option<f64>,
) -> Result<(split::Split, Vec<split::Candidate>)> {
    if !value.is_finite() {
        return Err(invalid("value", "a finite number"));
    }
    ctx.visible(site, "site", || format!("no site {site:?}"))?;
    if !ctx.db.site_exists(site).await? {
        return Err(refused(
            Refused::NotFound,
            "site",
            format!("no site {site:?}"),
        ));
    }
    let now = now_ms();
    let step = step.unwrap_or(0.1);
    if !(MIN_STEP..=MAX_STEP).contains(&step) {
        return Err(invalid(
            "step",
            format!("must be from {MIN_STEP} to {MAX_STEP}"),
        ));
    }
    let mut cands = Vec::new();
    for (asset, capacity, ws) in ctx.db.writable_points(site).await? {
        let Some(w) = ws.into_iter().find(|w| w.field == *field) else {
            continue;
        };
        let last = ctx.db.asset_last_good_ms(site, &asset).await?;
        cands.push(split::Candidate {
            asset_id: asset,
            capacity,
            min: w.min.unwrap_or(0.0),
            max: w.max.unwrap_or(capacity),
            online: last.is_some_and(|t| now - t <= ONLINE_WINDOW_MS),
        });
    }
    if cands.is_empty() {
        return Err(refused(
            Refused::Unprocessable,
            "field",
            format!("no asset of site {site} has a writable point {field:?}"),
        ));
    }
    let sp = split::split(value, step, &cands)
        .map_err(|e| refused(Refused::Unprocessable, "value", e))?;
    Ok((sp, cands))
}

/// The writable points of a site's assets: (asset, capacity, points).
pub async fn writable(ctx: &Context, site: &SiteId) -> Result<Vec<(String, f64, Vec<Writable>)>> {
    ctx.visible(site, "site", || format!("no site {site:?}"))?;
    Ok(ctx.db.writable_points(site).await?)
}

/// A setpoint for one asset, or a site-level one split across the site's
/// assets (a parent and one child per share). `warnings` gets what the
/// operator should know.
async fn setpoint(
    ctx: &Context,
    req: &SetpointRequest,
    base: Template,
    warnings: &mut Vec<String>,
) -> Result<Vec<NewCommand>> {
    let field = Some(req.field.clone())
        .filter(|f| !f.is_empty())
        .ok_or_else(|| invalid("field", "required for a setpoint (e.g. power_limit)"))?;
    let value = Some(req.value)
        .filter(|v| v.is_finite())
        .ok_or_else(|| invalid("value", "a finite number"))?;
    let duration_ms = match req.duration_s {
        None => 0,
        Some(d) if d > 0.0 && d <= MAX_EXPIRY_S as f64 => (d * 1000.0).round() as i64,
        Some(d) => {
            return Err(invalid(
                "duration_s",
                format!("must be > 0 and at most {MAX_EXPIRY_S} (7 days), got {d}"),
            ));
        }
    };
    let now = now_ms();
    let base = Template {
        kind: CommandKind::Setpoint,
        field: field.clone(),
        value: Some(value),
        duration_ms,
        expires_at_ms: expiry(
            now,
            req.expires_in_s,
            req.expires_at.as_deref(),
            DEFAULT_EXPIRY_S,
        )?,
        ..base
    };
    if let Some(asset) = req.asset.as_deref().filter(|a| !a.is_empty()) {
        let (site, asset) = resolve_asset(ctx, asset, req.site.as_ref()).await?;
        if let Some(given) = &req.site {
            warnings.push(format!(
                "both site ({given}) and asset given: the command targets asset {asset} at site {site} (the asset wins)"
            ));
        }
        let writable = writable_of(ctx, &site, &asset).await?;
        let Some(w) = writable.iter().find(|w| w.field == field) else {
            return Err(refused(
                Refused::Unprocessable,
                "field",
                format!(
                    "{site}/{asset} has no writable point {field:?} (writable: {})",
                    writable
                        .iter()
                        .map(|w| w.field.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        let (lo, hi) = (w.min.unwrap_or(f64::MIN), w.max.unwrap_or(f64::MAX));
        if !(lo..=hi).contains(&value) {
            return Err(refused(
                Refused::Unprocessable,
                "value",
                format!(
                    "{value} is outside the limits {site}/{asset} reported for {field} ({} to {})",
                    w.min.map_or("-".into(), |v| v.to_string()),
                    w.max.map_or("-".into(), |v| v.to_string()),
                ),
            ));
        }
        return Ok(vec![base.at(new_command_id(), site, asset)]);
    }
    let Some(site) = req.site.as_ref() else {
        return Err(invalid(
            "asset",
            "give the target: asset (SITE/ASSET), or site alone for a site-level target split across its assets",
        ));
    };
    let sp = split_plan(ctx, site, &field, value, req.step).await?.0;
    let parent = new_command_id();
    for (a, why) in &sp.excluded {
        warnings.push(format!("{a} gets no share: {why}"));
    }
    let mut cmds = vec![
        Template {
            kind: CommandKind::Split,
            payload: serde_json::to_string(&sp).unwrap_or_default(),
            policy_version: sp.policy_version.to_string(),
            ..base.clone()
        }
        .at(parent.clone(), site.clone(), String::new()),
    ];
    for share in &sp.shares {
        let mut child = Template {
            idempotency_key: None,
            request: String::new(),
            value: Some(share.value),
            policy_version: sp.policy_version.to_string(),
            ..base.clone()
        }
        .at(new_command_id(), site.clone(), share.asset_id.clone());
        child.parent_id = Some(parent.clone());
        cmds.push(child);
    }
    Ok(cmds)
}

/// Checks and submits a command request.
pub async fn submit(
    ctx: &Context,
    req: CommandRequest,
    key: Option<String>,
    actor: Actor,
) -> Result<Outcome> {
    let request = serde_json::to_string(&req).unwrap_or_default();
    let base = Template {
        idempotency_key: key.clone(),
        request: request.clone(),
        kind: CommandKind::Setpoint,
        field: String::new(),
        value: None,
        duration_ms: 0,
        expires_at_ms: UnixMs::default(),
        payload: "{}".into(),
        policy_version: String::new(),
        created_by: actor.clone(),
    };
    let mut warnings = Vec::new();
    let mut cmds = match &req {
        CommandRequest::Setpoint(r) => setpoint(ctx, r, base, &mut warnings).await?,
        CommandRequest::Eta(r) => {
            let load_id = &r.load_id;
            let load = ctx.db.loads().get(load_id).await?.ok_or_else(|| {
                refused(Refused::NotFound, "load_id", format!("no load {load_id:?}"))
            })?;
            ctx.visible(&load.site_id, "load_id", || format!("no load {load_id:?}"))?;
            let now = now_ms();
            let exp = expiry(
                now,
                r.expires_in_s,
                r.expires_at.as_deref(),
                eta_expiry_s(&load, now),
            )?;
            vec![eta_command(&load, key, request.clone(), exp, &actor)]
        }
    };
    let warnings_json = serde_json::to_string(&warnings).unwrap_or_default();
    for c in &mut cmds {
        c.warnings = warnings_json.clone();
    }
    let sent = cmds.iter().filter(|c| c.kind != CommandKind::Split).count();
    match ctx.db.commands().submit(&cmds, None).await? {
        Submitted::Created(row) => {
            ctx.metrics.commands_submitted.inc_by(sent as u64);
            ctx.dispatcher.nudge(&row.site_id);
            tracing::info!(command = %row.command_id, site = %row.site_id, kind = %row.kind, by = %row.created_by, "command submitted");
            Ok(Outcome::Created(view(ctx, row, true).await?))
        }
        Submitted::Existing(row) if row.request == request => {
            Ok(Outcome::Repeated(view(ctx, row, true).await?))
        }
        Submitted::Existing(row) => Err(refused(
            Refused::Unprocessable,
            "idempotency_key",
            format!(
                "was already used for another request (command {}); use a new key",
                row.command_id
            ),
        )),
    }
}

/// An ETA command stays valid until a day after the ETA.
pub(crate) fn eta_expiry_s(l: &LoadRow, now: i64) -> i64 {
    (((l.eta_ms.ms() - now) / 1000) + 24 * 3600).clamp(3600, MAX_EXPIRY_S)
}

pub(crate) fn eta_command(
    l: &LoadRow,
    key: Option<String>,
    request: String,
    expires_at_ms: UnixMs,
    created_by: &Actor,
) -> NewCommand {
    let payload = EtaPayload {
        tanks: l.tank_ids(),
        product: l.product.clone(),
        planned_volume_l: l.planned_volume_l,
        eta_ms: l.eta_ms,
        eta_source: l.eta_source,
        cancelled: l.status == crate::domain::LoadStatus::Cancelled,
    };
    NewCommand {
        command_id: new_command_id(),
        idempotency_key: key,
        request,
        parent_id: None,
        site_id: l.site_id.clone(),
        asset_id: payload.tanks.first().cloned().unwrap_or_default(),
        kind: CommandKind::Eta,
        field: String::new(),
        value: None,
        duration_ms: 0,
        expires_at_ms,
        payload: serde_json::to_string(&payload).unwrap_or_default(),
        load_id: Some(l.load_id.clone()),
        policy_version: String::new(),
        warnings: "[]".into(),
        created_by: created_by.clone(),
    }
}

/// Saves a load change and pushes the load's current ETA to its site, in
/// one transaction. Returns the ETA command.
pub async fn push_eta(ctx: &Context, change: LoadWrite<'_>) -> Result<CommandView> {
    let (load, who) = (change.row(), change.actor());
    let now = now_ms();
    let cmd = eta_command(
        load,
        None,
        String::new(),
        UnixMs::from_ms(now).plus_ms(eta_expiry_s(load, now) * 1000),
        who,
    );
    let row = match ctx.db.commands().submit(&[cmd], Some(change)).await? {
        Submitted::Created(r) => {
            ctx.metrics.commands_submitted.inc();
            r
        }
        Submitted::Existing(r) => r,
    };
    ctx.dispatcher.nudge(&load.site_id);
    view(ctx, row, false).await
}

async fn view(ctx: &Context, row: CommandRow, timeline: bool) -> Result<CommandView> {
    let commands = ctx.db.commands();
    let children = if row.kind == CommandKind::Split {
        commands.children(&row.command_id).await?
    } else {
        Vec::new()
    };
    let timeline = if timeline {
        commands.events(&row.command_id).await?
    } else {
        Vec::new()
    };
    Ok(CommandView {
        row,
        children,
        timeline,
    })
}

fn not_found(id: &str) -> super::ServiceError {
    refused(Refused::NotFound, "", format!("no command {id:?}"))
}

/// A command with its children and timeline.
pub async fn get(ctx: &Context, id: &CommandId) -> Result<CommandView> {
    let row = ctx
        .db
        .commands()
        .get(id)
        .await?
        .ok_or_else(|| not_found(id))?;
    ctx.visible(&row.site_id, "", || format!("no command {id:?}"))?;
    view(ctx, row, true).await
}

/// Newest first; `site` and `state` filter (a split parent's state is
/// its children's, stored with theirs).
pub async fn list(
    ctx: &Context,
    site: Option<&str>,
    state: Option<&str>,
    limit: i64,
    before_seq: Option<i64>,
) -> Result<Vec<CommandView>> {
    if let Some(site) = site {
        ctx.visible(site, "site", || format!("no site {site:?}"))?;
    }
    let state = state
        .map(|s| {
            s.parse::<CommandState>().map_err(|_| {
                invalid(
                    "state",
                    format!("{s:?}: use one of {}", CommandState::choices()),
                )
            })
        })
        .transpose()?;
    let sites = ctx.scope.sites();
    let rows = ctx
        .db
        .commands()
        .list(site, sites.as_deref(), state, limit, before_seq)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(view(ctx, r, false).await?);
    }
    Ok(out)
}

/// Cancels a command (a split: each of its children).
pub async fn cancel(ctx: &Context, id: &CommandId, actor: &Actor) -> Result<CommandView> {
    let commands = ctx.db.commands();
    let r = commands.get(id).await?.ok_or_else(|| not_found(id))?;
    ctx.visible(&r.site_id, "", || format!("no command {id:?}"))?;
    let targets: Vec<String> = if r.kind == CommandKind::Split {
        commands
            .children(id)
            .await?
            .into_iter()
            .map(|c| c.command_id.into_string())
            .collect()
    } else {
        vec![id.to_string()]
    };
    let mut any = false;
    for t in &targets {
        any |= commands.request_cancel(t, actor).await?;
    }
    if !any {
        return Err(refused(
            Refused::Conflict,
            "",
            format!(
                "command {id} has already ended ({}) or a cancel is under way",
                r.state
            ),
        ));
    }
    ctx.dispatcher.nudge(&r.site_id);
    let r = commands.get(id).await?.unwrap_or(r);
    view(ctx, r, true).await
}
