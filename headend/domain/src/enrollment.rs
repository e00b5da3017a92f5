//! Enrollment and renewal rules, pure: whether a one-time token may
//! enroll a site now, how long a token lives, and how a certificate came
//! to be.

use super::text_enum;

text_enum!(
    /// How the headend issued an agent certificate.
    IssuedVia, "issued via" {
        /// A one-time enrollment token (`edge-agent enroll`).
        Enrollment => "enrollment",
        /// The agent's live mTLS session, before the old one expired.
        Renewal => "renewal",
    }
);

/// Token lifetime when the request names none, minutes.
pub const DEFAULT_TOKEN_MINUTES: i64 = 60;
/// Longest token lifetime, minutes (3 days: an installer's trip).
pub const MAX_TOKEN_MINUTES: i64 = 72 * 60;

/// A stored token, as far as the rule needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFacts<'a> {
    pub site: &'a str,
    pub expires_ms: i64,
    pub used_ms: Option<i64>,
}

/// Why a token does not enroll. Each message tells the installer what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefused {
    #[error(
        "the enrollment token is not known to this headend (mistyped, or from another headend): ask the operator for a new token"
    )]
    Unknown,
    #[error(
        "the enrollment token was already used (at {used}); a token enrolls one agent once: ask the operator for a new token"
    )]
    Used { used: String },
    #[error(
        "the enrollment token expired at {expired}: ask the operator for a new token and enroll within its lifetime"
    )]
    Expired { expired: String },
    #[error(
        "the enrollment token is for site {bound:?}, not {asked:?}: check site_id in the agent's configuration, or ask for a token for {asked:?}"
    )]
    OtherSite { bound: String, asked: String },
}

/// Whether `token` enrolls `site` at `now_ms`. The order matters for the
/// message: a used token says so even if it has expired since.
pub fn check_token(
    token: Option<TokenFacts<'_>>,
    site: &str,
    now_ms: i64,
) -> Result<(), TokenRefused> {
    let Some(t) = token else {
        return Err(TokenRefused::Unknown);
    };
    if let Some(used) = t.used_ms {
        return Err(TokenRefused::Used {
            used: super::time::rfc3339(used).unwrap_or_else(|| used.to_string()),
        });
    }
    if now_ms >= t.expires_ms {
        return Err(TokenRefused::Expired {
            expired: super::time::rfc3339(t.expires_ms).unwrap_or_else(|| t.expires_ms.to_string()),
        });
    }
    if t.site != site {
        return Err(TokenRefused::OtherSite {
            bound: t.site.to_string(),
            asked: site.to_string(),
        });
    }
    Ok(())
}

/// A token's lifetime from a request, minutes: absent → the default;
/// out of 1..=[`MAX_TOKEN_MINUTES`] → an error naming the bounds.
pub fn token_minutes(asked: Option<i64>) -> Result<i64, String> {
    match asked {
        None => Ok(DEFAULT_TOKEN_MINUTES),
        Some(m) if (1..=MAX_TOKEN_MINUTES).contains(&m) => Ok(m),
        Some(m) => Err(format!(
            "{m}: a token lives 1 to {MAX_TOKEN_MINUTES} minutes"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn facts(site: &str, expires_ms: i64, used_ms: Option<i64>) -> TokenFacts<'_> {
        TokenFacts {
            site,
            expires_ms,
            used_ms,
        }
    }

    #[test]
    fn a_token_enrolls_its_own_site_once_before_it_expires() {
        type Case<'a> = (Option<TokenFacts<'a>>, &'a str, Result<(), &'a str>);
        let cases: Vec<Case> = vec![
            (Some(facts("a", NOW + 1, None)), "a", Ok(())),
            (None, "a", Err("not known")),
            (
                Some(facts("a", NOW + 1, Some(NOW - 5))),
                "a",
                Err("already used"),
            ),
            (Some(facts("a", NOW, None)), "a", Err("expired")),
            (
                Some(facts("a", NOW + 1, None)),
                "b",
                Err("for site \"a\", not \"b\""),
            ),
            // used and expired since: the use is what the installer must hear
            (
                Some(facts("a", NOW - 1, Some(NOW - 5))),
                "a",
                Err("already used"),
            ),
        ];
        for (token, site, want) in cases {
            let got = check_token(token.clone(), site, NOW);
            match (got, want) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{token:?}: {e}"),
                (g, w) => panic!("{token:?} for {site}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn a_token_lifetime_is_bounded() {
        assert_eq!(token_minutes(None), Ok(DEFAULT_TOKEN_MINUTES));
        assert_eq!(token_minutes(Some(5)), Ok(5));
        assert!(token_minutes(Some(0)).is_err());
        assert!(
            token_minutes(Some(MAX_TOKEN_MINUTES + 1))
                .unwrap_err()
                .contains("1 to")
        );
        assert_eq!("renewal".parse::<IssuedVia>(), Ok(IssuedVia::Renewal));
        assert!("manual".parse::<IssuedVia>().is_err());
    }
}
