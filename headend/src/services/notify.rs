//! Alarm mail, orchestrated: which open episodes call for a mail now
//! (`domain::notify::due`), to whom (the site's recipients at or above the
//! severity), held for a digest past a recipient's limit, and the digests.
//! The SMTP shell that sends them is `jobs::mail`.

use std::collections::BTreeMap;

use crate::domain::UnixMs;
use crate::domain::alarm::{AlarmState, Facts};
use crate::domain::notify::{
    self, About, MailState, Open, Recipient, Rules, over_limit, reaches, render, render_digest,
};
use crate::store::Db;
use crate::store::mail::{Candidate, MailRow, Outgoing};

/// What one round queued.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Episodes mailed about (to all their recipients).
    pub episodes: usize,
    pub queued: usize,
    pub held: usize,
    pub digests: usize,
}

/// Queues the mails the rules call for now, and the digests that are due.
pub async fn round(db: &Db, now: i64, r: &Rules) -> Result<Report, crate::Error> {
    let mut report = Report::default();
    for c in db.mail().candidates(now - r.window_ms).await? {
        let state = AlarmState::of(
            &Facts {
                cleared_ms: c.cleared_ms.map(UnixMs::ms),
                acked_ms: c.acked_ms.map(UnixMs::ms),
                shelved_until_ms: c.shelved_until_ms.map(UnixMs::ms),
            },
            now,
        );
        let open = Open {
            severity: c.severity,
            state,
            acked: c.acked_ms.is_some(),
            stored_ms: c.stored_ms.ms(),
            last_mail_ms: c.last_mail_ms.map(UnixMs::ms),
        };
        let Some(kind) = notify::due(&open, now, r) else {
            continue;
        };
        let recipients = db.mail().recipients(&c.site_id).await?;
        let to = outgoing(db, &recipients, &c, now, r).await?;
        let raised_at = c.raised_ms.rfc3339().unwrap_or_default();
        let (subject, body) = render(kind, &about(&c, &raised_at));
        if db
            .mail()
            .queue(&c, kind, (&subject, &body), &to, now)
            .await?
        {
            report.episodes += 1;
            report.queued += to.iter().filter(|o| o.state == MailState::Pending).count();
            report.held += to.iter().filter(|o| o.state == MailState::Held).count();
        }
    }
    report.digests = digests(db, now, r).await?;
    Ok(report)
}

/// The recipients an episode reaches, each sent now or held for its digest.
async fn outgoing(
    db: &Db,
    recipients: &[Recipient],
    c: &Candidate,
    now: i64,
    r: &Rules,
) -> Result<Vec<Outgoing>, crate::Error> {
    let mut to = Vec::new();
    for x in recipients
        .iter()
        .filter(|x| reaches(c.severity, x.min_severity))
    {
        let sent = db.mail().sent_since(&x.address, now - r.window_ms).await?;
        to.push(Outgoing {
            recipient: x.address.clone(),
            state: if over_limit(sent, r) {
                MailState::Held
            } else {
                MailState::Pending
            },
        });
    }
    Ok(to)
}

fn about<'a>(c: &'a Candidate, raised_at: &'a str) -> About<'a> {
    About {
        site: &c.site_id,
        site_name: c.site_name.as_deref().unwrap_or(""),
        asset: &c.asset_id,
        alarm_type: c.alarm_type,
        severity: c.severity,
        field: &c.field,
        raised_at,
        source: &c.source,
        episode: &c.episode_id,
    }
}

/// One digest per recipient whose oldest held mail has waited a window.
async fn digests(db: &Db, now: i64, r: &Rules) -> Result<usize, crate::Error> {
    let mut by: BTreeMap<String, Vec<MailRow>> = BTreeMap::new();
    for m in db.mail().held().await? {
        by.entry(m.recipient.clone()).or_default().push(m);
    }
    let mut n = 0;
    for (recipient, held) in by {
        let oldest = held.first().map_or(now, |m| m.created_ms.ms());
        if now - oldest < r.window_ms {
            continue;
        }
        let subjects: Vec<String> = held.iter().map(|m| m.subject.clone()).collect();
        let (subject, body) = render_digest(&subjects, r.window_ms);
        db.mail()
            .digest(&recipient, &held, (&subject, &body), now)
            .await?;
        n += 1;
    }
    Ok(n)
}
