//! Who is told about an alarm, when, and how often, pure: the rule per
//! severity (critical at once and again until acknowledged, major once
//! after a while unacknowledged, minor and warning only listed), the
//! recipients of a site, a per-recipient limit with a digest so that a
//! flapping sensor does not send a hundred mails, and the mail's text.

use super::alarm::{AlarmState, AlarmType, Severity};
use super::text_enum;

text_enum!(
    /// Why a mail about an alarm is sent.
    MailKind, "mail kind" {
        /// A critical alarm, at once.
        Raised => "raised",
        /// A major alarm nobody acknowledged within the rule's delay.
        Unacknowledged => "unacknowledged",
        /// A critical alarm still unacknowledged: again, until someone does.
        Reminder => "reminder",
        /// A recipient's held mails, in one.
        Digest => "digest",
    }
);

text_enum!(
    /// Where a queued mail stands.
    MailState, "mail state" {
        /// Waiting for its first or next attempt.
        Pending => "pending",
        /// Over the recipient's limit: waits for the next digest.
        Held => "held",
        Sent => "sent",
        /// Sent inside a digest.
        Digested => "digested",
        /// Given up after its last attempt.
        Dead => "dead",
    }
);

/// The notification rule: what each severity does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// A critical alarm is mailed at once, then again every this many ms
    /// while active and unacknowledged.
    pub critical_repeat_ms: i64,
    /// A major alarm is mailed once when it stays active and
    /// unacknowledged this long.
    pub major_after_ms: i64,
    /// Mails to one recipient within [`Rules::window_ms`] beyond this are
    /// held for the digest.
    pub per_recipient: usize,
    /// The rate window, and how often held mails go out as one digest.
    pub window_ms: i64,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            critical_repeat_ms: 15 * 60_000,
            major_after_ms: 30 * 60_000,
            per_recipient: 5,
            window_ms: 10 * 60_000,
        }
    }
}

/// What the notifier knows of one open episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open {
    pub severity: Severity,
    pub state: AlarmState,
    /// Someone acknowledged it (a cleared one too).
    pub acked: bool,
    /// When the headend stored it (mails count from there: an alarm that
    /// arrives after an outage is mailed at once, not judged by its age).
    pub stored_ms: i64,
    /// The last mail about it, if any.
    pub last_mail_ms: Option<i64>,
}

/// Which mail, if any, an episode calls for now. Acknowledging stops the
/// mails and a shelf holds them back; a critical alarm that cleared before
/// its first mail is still mailed once (unless someone acknowledged it):
/// a leak that came and went must not go unseen.
pub fn due(o: &Open, now: i64, r: &Rules) -> Option<MailKind> {
    let active = o.state == AlarmState::Active;
    match (o.severity, o.last_mail_ms) {
        (Severity::Critical, None) if active || (o.state == AlarmState::Cleared && !o.acked) => {
            Some(MailKind::Raised)
        }
        (Severity::Critical, Some(last)) if active && now - last >= r.critical_repeat_ms => {
            Some(MailKind::Reminder)
        }
        (Severity::Major, None) if active && now - o.stored_ms >= r.major_after_ms => {
            Some(MailKind::Unacknowledged)
        }
        _ => None,
    }
}

/// Whether one more mail to a recipient goes out now or is held for the
/// digest, given the times of the mails it was sent in the window.
pub fn over_limit(sent_in_window: usize, r: &Rules) -> bool {
    sent_in_window >= r.per_recipient
}

/// A recipient of a site's alarm mails: every alarm at or above its
/// severity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub address: String,
    pub min_severity: Severity,
}

/// Whether `severity` reaches a recipient whose floor is `min`
/// (critical > major > minor > warning).
pub fn reaches(severity: Severity, min: Severity) -> bool {
    rank(severity) >= rank(min)
}

fn rank(s: Severity) -> u8 {
    match s {
        Severity::Critical => 3,
        Severity::Major => 2,
        Severity::Minor => 1,
        Severity::Warning => 0,
    }
}

/// A checked e-mail address: one `@`, a non-empty local part and domain,
/// no spaces or control characters, at most 254 characters. (The SMTP
/// library parses it again; this names the field in a refusal.)
pub fn address(v: &str) -> Result<String, String> {
    let v = v.trim();
    let ok = v.len() <= 254
        && !v
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
        && matches!(v.split_once('@'), Some((l, d)) if !l.is_empty() && d.contains('.') && !d.contains('@') && !d.starts_with('.') && !d.ends_with('.'));
    if ok {
        Ok(v.to_string())
    } else {
        Err(format!("{v:?} is not an e-mail address"))
    }
}

/// The facts a mail tells.
#[derive(Debug, Clone, PartialEq)]
pub struct About<'a> {
    pub site: &'a str,
    pub site_name: &'a str,
    pub asset: &'a str,
    pub alarm_type: AlarmType,
    pub severity: Severity,
    pub field: &'a str,
    /// RFC 3339 of the raise (device time).
    pub raised_at: &'a str,
    pub source: &'a str,
    pub episode: &'a str,
}

/// The subject and text of one mail (one template per kind).
pub fn render(kind: MailKind, a: &About<'_>) -> (String, String) {
    let what = format!(
        "{} {} alarm on {} at {}",
        a.severity,
        a.alarm_type,
        a.asset,
        site_label(a)
    );
    let subject = match kind {
        MailKind::Raised => format!("[{}] {what}", upper(a.severity)),
        MailKind::Unacknowledged => format!("[{}] not acknowledged: {what}", upper(a.severity)),
        MailKind::Reminder => format!("[{}] still not acknowledged: {what}", upper(a.severity)),
        MailKind::Digest => format!("Alarms at {}", site_label(a)),
    };
    let body = format!(
        "{what}\n\nraised at: {}\npoint: {} ({})\nsource: {}\nalarm: {}\n\nAcknowledge it: POST /api/v1/alarms/{}/acknowledge\n",
        a.raised_at, a.field, a.alarm_type, a.source, a.episode, a.episode
    );
    (subject, body)
}

/// A digest: one mail listing a recipient's held mails (their subjects).
pub fn render_digest(subjects: &[String], window_ms: i64) -> (String, String) {
    let subject = format!(
        "{} alarm notifications in the last {} minutes",
        subjects.len(),
        window_ms / 60_000
    );
    let mut body = format!(
        "These were held back: more than the limit of mails to you in {} minutes.\n\n",
        window_ms / 60_000
    );
    for s in subjects {
        body.push_str("- ");
        body.push_str(s);
        body.push('\n');
    }
    (subject, body)
}

fn site_label(a: &About<'_>) -> String {
    if a.site_name.is_empty() || a.site_name == a.site {
        a.site.to_string()
    } else {
        format!("{} ({})", a.site_name, a.site)
    }
}

fn upper(s: Severity) -> String {
    s.as_str().to_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_text_form_round_trips() {
        crate::round_trips(MailKind::ALL);
        crate::round_trips(MailState::ALL);
    }

    #[test]
    fn each_severity_mails_by_its_rule_and_acknowledging_stops_the_repeats() {
        use AlarmState::*;
        use Severity::*;
        let r = Rules::default();
        let o = |severity, state, last| Open {
            severity,
            state,
            acked: state == Acknowledged,
            stored_ms: 0,
            last_mail_ms: last,
        };
        let min = 60_000;
        let table: &[(Open, i64, Option<MailKind>)] = &[
            (o(Critical, Active, None), 0, Some(MailKind::Raised)),
            (o(Critical, Active, Some(0)), 14 * min, None),
            (
                o(Critical, Active, Some(0)),
                15 * min,
                Some(MailKind::Reminder),
            ),
            (o(Critical, Acknowledged, Some(0)), 60 * min, None),
            (o(Critical, Shelved, None), 0, None),
            (o(Critical, Cleared, None), 0, Some(MailKind::Raised)),
            (o(Critical, Cleared, Some(0)), 60 * min, None),
            (
                Open {
                    acked: true,
                    ..o(Critical, Cleared, None)
                },
                0,
                None,
            ),
            (o(Major, Cleared, None), 60 * min, None),
            (o(Major, Active, None), 29 * min, None),
            (
                o(Major, Active, None),
                30 * min,
                Some(MailKind::Unacknowledged),
            ),
            (o(Major, Active, Some(30 * min)), 300 * min, None),
            (o(Major, Acknowledged, None), 30 * min, None),
            (o(Minor, Active, None), 1_000 * min, None),
            (o(Warning, Active, None), 1_000 * min, None),
        ];
        for (open, now, want) in table {
            assert_eq!(due(open, *now, &r), *want, "{open:?} at {now}");
        }
    }

    #[test]
    fn recipients_get_alarms_at_or_above_their_floor() {
        use Severity::*;
        assert!(reaches(Critical, Major) && reaches(Major, Major));
        assert!(!reaches(Minor, Major) && !reaches(Warning, Minor));
        assert!(reaches(Warning, Warning));
        let r = Rules::default();
        assert!(!over_limit(4, &r) && over_limit(5, &r));
    }

    #[test]
    fn addresses_are_checked_and_bad_ones_named() {
        for ok in ["ops@example.com", " night.shift+tanks@fuel.example.org "] {
            assert!(address(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "ops",
            "@example.com",
            "ops@",
            "ops@example",
            "a b@example.com",
            "ops@@example.com",
            "<ops@example.com>",
            "ops@example.com\r\nBcc: x@y.z",
        ] {
            let e = address(bad).err().unwrap_or_default();
            assert!(e.contains("not an e-mail address"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn a_mail_names_the_severity_type_tank_and_site_in_its_subject() {
        let a = About {
            site: "site-7",
            site_name: "Northgate",
            asset: "tank-2",
            alarm_type: AlarmType::Leak,
            severity: Severity::Critical,
            field: "alarm.leak",
            raised_at: "2026-12-06T10:00:00Z",
            source: "modbus://10.0.0.5:502/unit1/hr14.3",
            episode: "alm-1",
        };
        let (s, b) = render(MailKind::Raised, &a);
        assert_eq!(
            s,
            "[CRITICAL] critical leak alarm on tank-2 at Northgate (site-7)"
        );
        assert!(
            b.contains("raised at: 2026-12-06T10:00:00Z")
                && b.contains("/api/v1/alarms/alm-1/acknowledge")
        );
        let (s, _) = render(MailKind::Reminder, &a);
        assert!(s.starts_with("[CRITICAL] still not acknowledged: "), "{s}");
        let (s, b) = render_digest(&["x".into(), "y".into()], 600_000);
        assert_eq!(s, "2 alarm notifications in the last 10 minutes");
        assert!(b.contains("- x\n- y\n"));
    }
}
