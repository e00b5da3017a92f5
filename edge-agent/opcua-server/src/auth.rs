//! Who may do what on the agent's OPC UA server.
//!
//! - Users have a name, an argon2 password hash (never the password) and a
//!   role: `read_only` or `read_write`. Only `read_write` users on a
//!   signed (or signed and encrypted) channel may write; the server strips
//!   the write bit from every other session's user access level.
//! - Security `none`, when configured, admits anonymous sessions only, and
//!   they are read-only.
//! - A name that fails [`MAX_FAILURES`] times in a row is locked for
//!   [`LOCKOUT`] (doubling on each further lock, at most [`LOCKOUT_MAX`]);
//!   every failure answers after [`FAIL_DELAY`]. Attempts during a lock
//!   are refused but neither counted nor extend it (issue 29: the real
//!   HMI retrying its correct password must not keep itself locked out);
//!   the lock runs out when it was set to. A wrong password and an
//!   unknown user look the same to the client.
//! - One password is verified at a time, on one low-priority thread with
//!   one reused block of memory (`verify.rs`): a burst of logins queues
//!   instead of taking the memory of the whole burst and the CPU the device
//!   polling needs.
//!
//! The session's user token text says the role: `rw:<name>`, `ro:<name>`,
//! or the anonymous token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use opcua::crypto::Thumbprint;
use opcua::server::address_space::AccessLevel;
use opcua::server::authenticator::{
    AuthManager, Password, UserToken, user_pass_security_policy_id,
};
use opcua::server::{ANONYMOUS_USER_TOKEN_ID, ServerEndpoint};
use opcua::types::{
    ByteString, Error, MessageSecurityMode, NodeId, StatusCode, UAString, UserTokenPolicy,
    UserTokenType,
};

use crate::config::{Role, User};

/// Failures in a row before a name is locked.
pub const MAX_FAILURES: u32 = 5;
/// First lock time.
pub const LOCKOUT: Duration = Duration::from_secs(30);
/// Longest lock time.
pub const LOCKOUT_MAX: Duration = Duration::from_secs(15 * 60);
/// Every failed login answers after this long.
pub const FAIL_DELAY: Duration = Duration::from_millis(500);
/// Names tracked for lockout; beyond it the oldest entry is forgotten.
pub const TRACKED_NAMES: usize = 1024;

/// Failed logins per name (pure: the clock is an argument).
#[derive(Debug, Default)]
pub struct Lockout {
    names: HashMap<String, Failures>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    in_a_row: u32,
    locks: u32,
    locked_until: Option<Instant>,
    last: Instant,
}

impl Lockout {
    /// `Some(remaining)` while `name` is locked.
    pub fn locked(&self, name: &str, now: Instant) -> Option<Duration> {
        let until = self.names.get(name)?.locked_until?;
        (until > now).then(|| until - now)
    }

    /// Records a failure; `Some(lock)` when it locks the name.
    /// A failure during a lock is not counted and does not extend it.
    pub fn failed(&mut self, name: &str, now: Instant) -> Option<Duration> {
        if self.locked(name, now).is_some() {
            return None;
        }
        if self.names.len() >= TRACKED_NAMES
            && !self.names.contains_key(name)
            && let Some(oldest) = self
                .names
                .iter()
                .min_by_key(|(_, f)| f.last)
                .map(|(n, _)| n.clone())
        {
            self.names.remove(&oldest);
        }
        let f = self.names.entry(name.to_string()).or_insert(Failures {
            in_a_row: 0,
            locks: 0,
            locked_until: None,
            last: now,
        });
        f.in_a_row += 1;
        f.last = now;
        if f.in_a_row < MAX_FAILURES {
            return None;
        }
        let lock = LOCKOUT
            .saturating_mul(1u32 << f.locks.min(10))
            .min(LOCKOUT_MAX);
        f.in_a_row = 0;
        f.locks += 1;
        f.locked_until = Some(now + lock);
        Some(lock)
    }

    /// A successful login clears the name's record.
    pub fn succeeded(&mut self, name: &str) {
        self.names.remove(name);
    }
}

/// The role a session's token carries.
pub fn may_write(token: &UserToken) -> bool {
    token.0.starts_with("rw:")
}

/// The user name of a session's token (`anonymous` for the anonymous one).
pub fn user_name(token: &UserToken) -> &str {
    token
        .0
        .split_once(':')
        .map(|(_, n)| n)
        .unwrap_or("anonymous")
}

/// Checks a password against an argon2 PHC string (slow by design).
pub fn verify(hash: &str, password: &str) -> bool {
    crate::verify::verify_with(&mut Vec::new(), hash, password)
}

/// Whether a password hash's cost is one the server accepts.
pub fn hash_cost_ok(hash: &str) -> Result<(), String> {
    crate::verify::cost_ok(hash)
}

/// An argon2id PHC string for `password` (`edge-agent opcua-password`).
pub fn hash(password: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Called once per refused login (the agent counts it for `/metrics`).
pub type OnRefused = std::sync::Arc<dyn Fn() + Send + Sync>;

/// The server's authenticator.
pub struct Auth {
    users: HashMap<String, User>,
    lockout: Mutex<Lockout>,
    on_refused: OnRefused,
    verifier: crate::verify::Verifier,
}

impl Auth {
    /// Fails only when the verifier thread cannot be started.
    pub fn new(users: &[User], on_refused: OnRefused) -> std::io::Result<Auth> {
        Ok(Auth {
            users: users.iter().map(|u| (u.name.clone(), u.clone())).collect(),
            lockout: Mutex::new(Lockout::default()),
            on_refused,
            verifier: crate::verify::Verifier::start()?,
        })
    }

    fn lockout(&self) -> std::sync::MutexGuard<'_, Lockout> {
        self.lockout.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn refuse(&self, name: &str, why: &str) -> Error {
        (self.on_refused)();
        let lock = { self.lockout().failed(name, Instant::now()) };
        match lock {
            Some(d) => tracing::warn!(user = %name, why, locked_s = d.as_secs(),
                "OPC UA login refused; the name is locked after repeated failures"),
            None => tracing::warn!(user = %name, why, "OPC UA login refused"),
        }
        tokio::time::sleep(FAIL_DELAY).await;
        Error::new(
            StatusCode::BadUserAccessDenied,
            "user name or password not accepted",
        )
    }
}

fn secure(endpoint: &ServerEndpoint) -> bool {
    endpoint.message_security_mode() != MessageSecurityMode::None
}

#[async_trait::async_trait]
impl AuthManager for Auth {
    async fn authenticate_anonymous_token(&self, endpoint: &ServerEndpoint) -> Result<(), Error> {
        if secure(endpoint) || !endpoint.user_token_ids.contains(ANONYMOUS_USER_TOKEN_ID) {
            return Err(Error::new(
                StatusCode::BadIdentityTokenRejected,
                "anonymous sessions only on the read-only security none endpoint",
            ));
        }
        Ok(())
    }

    async fn authenticate_username_identity_token(
        &self,
        endpoint: &ServerEndpoint,
        username: &str,
        password: &Password,
    ) -> Result<UserToken, Error> {
        if !secure(endpoint) {
            return Err(self
                .refuse(username, "user names only over a secure channel")
                .await);
        }
        let locked = self.lockout().locked(username, Instant::now());
        if locked.is_some() {
            // refused, but neither counted nor extending the lock
            return Err(self.refuse(username, "the name is locked").await);
        }
        let Some(user) = self.users.get(username).cloned() else {
            return Err(self.refuse(username, "unknown user").await);
        };
        let pw = password.get().to_string();
        let hash = user.password_hash.clone();
        // one at a time, on the login thread: a burst of logins queues there
        match self.verifier.verify(hash, pw).await {
            Ok(true) => {}
            Ok(false) => return Err(self.refuse(username, "wrong password").await),
            Err(crate::verify::NotChecked::Busy) => {
                (self.on_refused)();
                tracing::warn!(user = %username, queued = crate::verify::QUEUED,
                    "OPC UA login refused: too many logins waiting for a password check");
                return Err(Error::new(
                    StatusCode::BadTooManyOperations,
                    "too many logins at once; try again",
                ));
            }
            Err(crate::verify::NotChecked::Gone) => {
                return Err(Error::new(StatusCode::BadShutdown, "the agent is stopping"));
            }
        }
        self.lockout().succeeded(username);
        let role = match user.role {
            Role::ReadWrite => "rw",
            Role::ReadOnly => "ro",
        };
        tracing::info!(user = %username, role = ?user.role, "OPC UA session activated");
        Ok(UserToken(format!("{role}:{username}")))
    }

    async fn authenticate_x509_identity_token(
        &self,
        _endpoint: &ServerEndpoint,
        _signing_thumbprint: &Thumbprint,
    ) -> Result<UserToken, Error> {
        Err(Error::new(
            StatusCode::BadIdentityTokenRejected,
            "X.509 user tokens are not offered",
        ))
    }

    async fn authenticate_issued_identity_token(
        &self,
        _endpoint: &ServerEndpoint,
        _token: &ByteString,
    ) -> Result<UserToken, Error> {
        Err(Error::new(
            StatusCode::BadIdentityTokenRejected,
            "issued tokens are not offered",
        ))
    }

    fn effective_user_access_level(
        &self,
        token: &UserToken,
        user_access_level: AccessLevel,
        _node_id: &NodeId,
    ) -> AccessLevel {
        if may_write(token) {
            user_access_level
        } else {
            user_access_level - AccessLevel::CURRENT_WRITE - AccessLevel::HISTORY_WRITE
        }
    }

    fn user_token_policies(&self, endpoint: &ServerEndpoint) -> Vec<UserTokenPolicy> {
        if secure(endpoint) {
            vec![UserTokenPolicy {
                policy_id: user_pass_security_policy_id(endpoint),
                token_type: UserTokenType::UserName,
                issued_token_type: UAString::null(),
                issuer_endpoint_url: UAString::null(),
                security_policy_uri: UAString::null(),
            }]
        } else {
            vec![UserTokenPolicy {
                policy_id: UAString::from("anonymous"),
                token_type: UserTokenType::Anonymous,
                issued_token_type: UAString::null(),
                issuer_endpoint_url: UAString::null(),
                security_policy_uri: UAString::null(),
            }]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_locked_after_five_failures_for_longer_each_time_and_a_success_clears_it() {
        let mut l = Lockout::default();
        let t0 = Instant::now();
        for _ in 0..4 {
            assert_eq!(l.failed("bob", t0), None);
        }
        assert_eq!(l.locked("bob", t0), None);
        assert_eq!(l.failed("bob", t0), Some(LOCKOUT));
        assert_eq!(
            l.locked("bob", t0 + Duration::from_secs(10)),
            Some(Duration::from_secs(20))
        );
        // the real HMI retrying during the lock neither extends nor renews it
        for s in 1..20 {
            assert_eq!(l.failed("bob", t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(
            l.locked("bob", t0 + Duration::from_secs(29)),
            Some(Duration::from_secs(1))
        );
        assert_eq!(l.locked("bob", t0 + LOCKOUT), None, "the lock runs out");
        assert_eq!(l.locked("alice", t0), None, "per name");
        for _ in 0..4 {
            l.failed("bob", t0 + LOCKOUT);
        }
        assert_eq!(l.failed("bob", t0 + LOCKOUT), Some(LOCKOUT * 2), "doubles");
        l.succeeded("bob");
        assert_eq!(l.locked("bob", t0 + LOCKOUT), None);
        // bounded: many names do not grow it past its limit
        for i in 0..(TRACKED_NAMES + 10) {
            l.failed(&format!("n{i}"), t0);
        }
        assert!(l.names.len() <= TRACKED_NAMES);
    }

    #[test]
    fn a_hash_verifies_its_password_only_and_a_malformed_hash_verifies_nothing() {
        let h = hash("s3cret pass").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify(&h, "s3cret pass"));
        assert!(!verify(&h, "s3cret pas"));
        assert!(!verify("not a hash", "s3cret pass"));
    }

    #[test]
    fn only_read_write_tokens_keep_the_write_bit() {
        let auth = Auth::new(&[], std::sync::Arc::new(|| {})).unwrap();
        let rw = AccessLevel::CURRENT_READ | AccessLevel::CURRENT_WRITE;
        let id = NodeId::null();
        let level = |t: &str| {
            auth.effective_user_access_level(&UserToken(t.into()), rw, &id)
                .bits()
        };
        assert_eq!(level("rw:alice"), rw.bits());
        assert_eq!(level("ro:bob"), AccessLevel::CURRENT_READ.bits());
        assert_eq!(
            level(ANONYMOUS_USER_TOKEN_ID),
            AccessLevel::CURRENT_READ.bits()
        );
        assert_eq!(user_name(&UserToken("rw:alice:x".into())), "alice:x");
        assert_eq!(
            user_name(&UserToken(ANONYMOUS_USER_TOKEN_ID.into())),
            "anonymous"
        );
    }
}
