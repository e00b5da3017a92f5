//! Secrets: passwords (argon2id, parameters recorded in each PHC hash so
//! they can be raised later), and bearer tokens (256 random bits from the
//! OS; stored as SHA-256, compared in constant time). Nothing here logs.
//!
//! Token forms (the prefix says what it is, so a leaked one is easy to
//! recognise and scan for):
//! * `twa_<43 base64url>`: an access token (short-lived);
//! * `twr_<43 base64url>`: a refresh token (single use, rotating);
//! * `twk_<key id>_<43 base64url>`: an API key (the id is public and
//!   names the key in the audit trail; the rest is its secret).

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// argon2id memory, KiB (OWASP's 19 MiB).
pub const ARGON2_M_KIB: u32 = 19 * 1024;
/// argon2id passes.
pub const ARGON2_T: u32 = 2;
/// argon2id lanes.
pub const ARGON2_P: u32 = 1;
/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted (argon2 time does not depend on it, but a
/// bound keeps request bodies and memory honest).
pub const MAX_PASSWORD_CHARS: usize = 256;

fn argon2() -> Argon2<'static> {
    // the parameters are constants that argon2 accepts; the fallback is never taken
    let params = Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Is `password` acceptable to set? (Length only: a pass phrase beats rules.)
pub fn check_password(password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(format!(
            "a password has at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    if n > MAX_PASSWORD_CHARS {
        return Err(format!(
            "a password has at most {MAX_PASSWORD_CHARS} characters"
        ));
    }
    if password.chars().any(char::is_control) {
        return Err("a password has no control characters".into());
    }
    Ok(())
}

/// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) of `password`.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing the password: {e}"))
}

/// Does `password` match `phc`? (Whatever parameters `phc` records.) A
/// malformed hash never matches.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// Was `phc` made with weaker parameters than today's (hash it again at
/// the next successful login)?
pub fn needs_rehash(phc: &str) -> bool {
    let Ok(h) = PasswordHash::new(phc) else {
        return true;
    };
    let Ok(p) = Params::try_from(&h) else {
        return true;
    };
    h.algorithm.as_str() != "argon2id"
        || p.m_cost() < ARGON2_M_KIB
        || p.t_cost() < ARGON2_T
        || p.p_cost() < ARGON2_P
}

/// A hash of a password nobody has, verified when a login names an
/// unknown user, so an unknown and a known name take the same time.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        hash_password(&random_b64()).unwrap_or_else(|_| {
            "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$ZmFrZWhhc2hmYWtlaGFzaGZha2VoYXNoZmFrZWhhc2g".into()
        })
    })
}

/// 32 random bytes from the OS, base64url (43 characters).
pub fn random_b64() -> String {
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// A short random id (12 base32-ish lowercase characters).
pub fn random_id() -> String {
    let mut b = [0u8; 8];
    OsRng.fill_bytes(&mut b);
    super::audit::hex(&b)
}

/// SHA-256 of a token, hex: what is stored and looked up.
pub fn token_hash(token: &str) -> String {
    super::audit::hex(&Sha256::digest(token.as_bytes()))
}

/// Constant-time equality of two hashes.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// What a bearer credential claims to be (by its form alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bearer<'a> {
    Access(&'a str),
    Refresh(&'a str),
    ApiKey { id: &'a str, secret: &'a str },
}

fn is_b64_secret(s: &str) -> bool {
    s.len() == 43
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// Recognises a token by its form; anything else is `None`.
pub fn parse_bearer(t: &str) -> Option<Bearer<'_>> {
    if let Some(s) = t.strip_prefix("twa_") {
        return is_b64_secret(s).then_some(Bearer::Access(t));
    }
    if let Some(s) = t.strip_prefix("twr_") {
        return is_b64_secret(s).then_some(Bearer::Refresh(t));
    }
    let (id, secret) = parse_keyed("twk", t)?;
    Some(Bearer::ApiKey { id, secret })
}

pub fn new_access_token() -> String {
    format!("twa_{}", random_b64())
}

pub fn new_refresh_token() -> String {
    format!("twr_{}", random_b64())
}

/// A session's form token (the console's CSRF token).
pub fn new_form_token() -> String {
    format!("twf_{}", random_b64())
}

/// The session's form token as one page carries it: a fresh random pad
/// and the token XORed with it (`pad.masked`, base64url), so no two
/// answers carry the same bytes and a compressed page leaks nothing of
/// the token by its length (BREACH).
pub fn mask_form_token(token: &str) -> String {
    let t = token.as_bytes();
    let mut pad = vec![0u8; t.len()];
    OsRng.fill_bytes(&mut pad);
    let masked: Vec<u8> = t.iter().zip(&pad).map(|(a, b)| a ^ b).collect();
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&pad),
        URL_SAFE_NO_PAD.encode(masked)
    )
}

/// The token a form sent, unmasked ([`mask_form_token`]); `None` when
/// it is not a masked token.
pub fn unmask_form_token(sent: &str) -> Option<String> {
    let (pad, masked) = sent.split_once('.')?;
    let pad = URL_SAFE_NO_PAD.decode(pad).ok()?;
    let masked = URL_SAFE_NO_PAD.decode(masked).ok()?;
    if pad.len() != masked.len() || pad.is_empty() || pad.len() > 256 {
        return None;
    }
    String::from_utf8(masked.iter().zip(&pad).map(|(a, b)| a ^ b).collect()).ok()
}

/// A new API key: (id, the whole key shown once, the secret's hash).
pub fn new_api_key() -> (String, String, String) {
    new_keyed("twk")
}

/// A new one-time enrollment token: (id, the token shown once, the
/// secret's hash).
pub fn new_enrollment_token() -> (String, String, String) {
    new_keyed("twe")
}

fn new_keyed(prefix: &str) -> (String, String, String) {
    let id = random_id();
    let secret = random_b64();
    let hash = token_hash(&secret);
    (id.clone(), format!("{prefix}_{id}_{secret}"), hash)
}

/// `<prefix>_<16 hex id>_<43 base64url secret>` → (id, secret).
fn parse_keyed<'a>(prefix: &str, t: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = t.strip_prefix(prefix)?.strip_prefix('_')?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == 16 && id.bytes().all(|c| c.is_ascii_hexdigit());
    (id_ok && is_b64_secret(secret)).then_some((id, secret))
}

/// Recognises an enrollment token by its form: (id, secret).
pub fn parse_enrollment_token(t: &str) -> Option<(&str, &str)> {
    parse_keyed("twe", t)
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_masked_form_token_differs_each_time_and_unmasks_to_the_token() {
        let t = new_form_token();
        let (a, b) = (mask_form_token(&t), mask_form_token(&t));
        assert_ne!(a, b);
        assert!(!a.contains(&t));
        assert_eq!(unmask_form_token(&a).as_deref(), Some(t.as_str()));
        assert_eq!(unmask_form_token(&b).as_deref(), Some(t.as_str()));
        // the bare token, a truncated or a foreign value is no masked token
        assert_eq!(unmask_form_token(&t), None);
        assert_eq!(unmask_form_token(&a[..a.len() - 2]), None);
        assert_eq!(unmask_form_token("."), None);
        assert_eq!(unmask_form_token("a.b.c"), None);
    }

    use super::*;

    #[test]
    fn a_password_hash_records_argon2id_and_its_parameters_and_verifies_only_its_password() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterz", &h));
        assert!(!verify_password("correct horse battery", "not a hash"));
        assert!(!needs_rehash(&h));
        // a hash made with lower parameters still verifies, and asks to be redone
        let weak = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(4096, 1, 1, None).unwrap(),
        )
        .hash_password(b"pw", &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
        assert!(verify_password("pw", &weak));
        assert!(needs_rehash(&weak));
        assert!(needs_rehash("garbage"));
    }

    #[test]
    fn passwords_shorter_than_12_or_with_control_characters_are_refused() {
        assert!(check_password("short").is_err());
        assert!(check_password("twelve chars").is_ok());
        assert!(check_password("twelve\nchars!").is_err());
        assert!(check_password(&"x".repeat(257)).is_err());
    }

    #[test]
    fn tokens_are_recognised_by_their_form_only() {
        let a = new_access_token();
        let r = new_refresh_token();
        let (id, key, hash) = new_api_key();
        assert_eq!(parse_bearer(&a), Some(Bearer::Access(&a)));
        assert_eq!(parse_bearer(&r), Some(Bearer::Refresh(&r)));
        match parse_bearer(&key) {
            Some(Bearer::ApiKey { id: i, secret }) => {
                assert_eq!(i, id);
                assert!(same(&token_hash(secret), &hash));
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            "",
            "twa_",
            "twa_short",
            "Bearer x",
            "twk_abc_def",
            &a[..a.len() - 1],
            &format!("{a}x"),
        ] {
            assert_eq!(parse_bearer(bad), None, "{bad}");
        }
        assert_ne!(new_access_token(), new_access_token());
        assert!(!same(&token_hash("a"), &token_hash("b")));
        assert!(!same("ab", "abc"));
    }
}
