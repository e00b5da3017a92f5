//! Password verification off the runtime: one thread, one block of
//! memory, a low CPU priority (issue 29).
//!
//! An argon2 verification takes the hash's memory cost (19 MiB for the
//! default) and a core for a moment. Done on tokio's blocking pool, every
//! pool thread kept its own 19 MiB in its malloc arena: 300 logins took the
//! agent from 38 to 669 MiB. And ten at once took both cores from device
//! polling. Here:
//! - one thread verifies, one password at a time, into one block of memory
//!   allocated on the first login and reused (it never grows past the
//!   largest hash's cost, which `config` bounds to [`MAX_COST_KIB`]);
//! - the thread runs at nice [`NICE`], so polling and publishing win the
//!   CPU while a burst of logins is verified;
//! - at most [`QUEUED`] logins wait; one more is refused at once (counted
//!   as a refused login) instead of queueing memory without end.

use std::sync::mpsc;

use argon2::password_hash::PasswordHash;
use argon2::{Argon2, Block, Params};
use tokio::sync::oneshot;

/// The largest memory cost a password hash may ask for, KiB (64 MiB).
pub const MAX_COST_KIB: u32 = 64 * 1024;
/// The largest time cost (passes) a password hash may ask for.
pub const MAX_PASSES: u32 = 10;
/// Logins waiting for the verifier; one more is refused.
pub const QUEUED: usize = 32;
/// The verifier thread's nice value (0 is the agent's own).
pub const NICE: i32 = 10;

/// Checks that a PHC string is argon2 with a cost the verifier accepts.
pub fn cost_ok(hash: &str) -> Result<(), String> {
    let h = PasswordHash::new(hash).map_err(|e| format!("not a PHC string: {e}"))?;
    let p = Params::try_from(&h).map_err(|e| format!("argon2 parameters: {e}"))?;
    if p.m_cost() > MAX_COST_KIB {
        return Err(format!(
            "needs {} KiB of memory per login, more than {MAX_COST_KIB}; make it with `edge-agent opcua-password`",
            p.m_cost()
        ));
    }
    if p.t_cost() > MAX_PASSES {
        return Err(format!(
            "needs {} passes per login, more than {MAX_PASSES}; make it with `edge-agent opcua-password`",
            p.t_cost()
        ));
    }
    Ok(())
}

/// Verifies `password` against `hash`, using `memory` as argon2's blocks
/// (grown to the hash's cost when smaller; never shrunk).
pub fn verify_with(memory: &mut Vec<Block>, hash: &str, password: &str) -> bool {
    let Ok(h) = PasswordHash::new(hash) else {
        return false;
    };
    if cost_ok(hash).is_err() {
        return false;
    }
    let (Ok(alg), Ok(params)) = (h.algorithm.try_into(), Params::try_from(&h)) else {
        return false;
    };
    let version = match h.version.map(argon2::Version::try_from) {
        None => argon2::Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let (Some(salt), Some(expected)) = (h.salt, h.hash) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    let a = Argon2::new(alg, version, params);
    if a.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory[..blocks])
        .is_err()
    {
        return false;
    }
    // `Output`'s equality is constant-time
    argon2::password_hash::Output::new(&out).is_ok_and(|o| o == expected)
}

struct Job {
    hash: String,
    password: String,
    answer: oneshot::Sender<bool>,
}

/// Why a password was not checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotChecked {
    /// [`QUEUED`] logins are already waiting.
    Busy,
    /// The verifier thread is gone (the agent is stopping).
    Gone,
}

/// The handle to the verifier thread.
pub struct Verifier {
    jobs: mpsc::SyncSender<Job>,
}

impl Verifier {
    /// Starts the thread.
    pub fn start() -> std::io::Result<Verifier> {
        let (jobs, rx) = mpsc::sync_channel::<Job>(QUEUED);
        std::thread::Builder::new()
            .name("opcua-login".into())
            .spawn(move || {
                lower_priority();
                let mut memory = Vec::new();
                while let Ok(j) = rx.recv() {
                    let ok = verify_with(&mut memory, &j.hash, &j.password);
                    let _ = j.answer.send(ok);
                }
            })?;
        Ok(Verifier { jobs })
    }

    /// Verifies on the thread; waits its turn.
    pub async fn verify(&self, hash: String, password: String) -> Result<bool, NotChecked> {
        let (answer, rx) = oneshot::channel();
        self.jobs
            .try_send(Job {
                hash,
                password,
                answer,
            })
            .map_err(|e| match e {
                mpsc::TrySendError::Full(_) => NotChecked::Busy,
                mpsc::TrySendError::Disconnected(_) => NotChecked::Gone,
            })?;
        rx.await.map_err(|_| NotChecked::Gone)
    }
}

/// Lowers the calling thread's CPU priority to [`NICE`] (on Linux a nice
/// value is per thread). Failing is harmless: logged, and verification
/// runs at the agent's priority.
fn lower_priority() {
    // SAFETY: setpriority only reads its integer arguments; `who` 0 is the
    // calling thread on Linux.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICE) };
    if r != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "could not lower the OPC UA login thread's priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_against_its_own_hash_and_nothing_else() {
        let h = crate::auth::hash("correct horse").unwrap();
        let mut mem = Vec::new();
        assert!(verify_with(&mut mem, &h, "correct horse"));
        assert!(!verify_with(&mut mem, &h, "correct hors"));
        assert!(!verify_with(&mut mem, "not a hash", "correct horse"));
        // the same block of memory serves every verification
        assert_eq!(mem.len(), Params::DEFAULT_M_COST as usize);
        let cap = mem.capacity();
        assert!(verify_with(&mut mem, &h, "correct horse"));
        assert_eq!(mem.capacity(), cap);
    }

    #[test]
    fn a_hash_with_other_argon2_parameters_verifies() {
        // argon2i, version 0x10, m=1024 t=3: every parameter read from the hash
        let h = argon2::password_hash::PasswordHasher::hash_password(
            &Argon2::new(
                argon2::Algorithm::Argon2i,
                argon2::Version::V0x10,
                Params::new(1024, 3, 1, None).unwrap(),
            ),
            b"password",
            &argon2::password_hash::SaltString::from_b64("c29tZXNhbHRzb21lc2FsdA").unwrap(),
        )
        .unwrap()
        .to_string();
        assert!(h.starts_with("$argon2i$v=16$m=1024,t=3,p=1$"), "{h}");
        let mut mem = Vec::new();
        assert!(verify_with(&mut mem, &h, "password"));
        assert!(!verify_with(&mut mem, &h, "Password"));
    }

    #[test]
    fn a_hash_that_would_take_too_much_memory_or_time_is_refused() {
        let big = "$argon2id$v=19$m=1048576,t=2,p=1$c2FsdHNhbHRzYWx0$2Vg3o5e4bCqaM9tS6m5jI2cSCuhwJ2HwFz1cQWQxM5k";
        assert!(cost_ok(big).unwrap_err().contains("1048576 KiB"));
        let slow = "$argon2id$v=19$m=19456,t=50,p=1$c2FsdHNhbHRzYWx0$2Vg3o5e4bCqaM9tS6m5jI2cSCuhwJ2HwFz1cQWQxM5k";
        assert!(cost_ok(slow).unwrap_err().contains("50 passes"));
        let mut mem = Vec::new();
        assert!(!verify_with(&mut mem, big, "x"));
        assert!(mem.is_empty(), "nothing allocated for a refused hash");
    }

    #[tokio::test]
    async fn logins_past_the_queue_are_refused_at_once_not_queued() {
        let v = Verifier::start().unwrap();
        let h = crate::auth::hash("pw").unwrap();
        let mut waiting = Vec::new();
        let mut busy = 0;
        for _ in 0..QUEUED + 8 {
            let (answer, rx) = oneshot::channel();
            match v.jobs.try_send(Job {
                hash: h.clone(),
                password: "pw".into(),
                answer,
            }) {
                Ok(()) => waiting.push(rx),
                Err(mpsc::TrySendError::Full(_)) => busy += 1,
                Err(e) => panic!("{e}"),
            }
        }
        // the thread takes one off the queue at once, so 1..=8 are refused
        assert!((7..=8).contains(&busy), "{busy}");
        for rx in waiting {
            assert!(rx.await.unwrap());
        }
        assert_eq!(v.verify(h, "pw".into()).await, Ok(true));
    }
}
