//! Test hooks: ways to make the log fail as disks and crashes do, for the
//! agent's and the e2e tests (hidden from the docs).

use rusqlite::{OptionalExtension, params};

use crate::{Log, Result, lock};

impl Log {
    /// Test hook: the process dies here: nothing is committed or closed,
    /// only the directory lock goes (the kernel releases it with the process).
    #[doc(hidden)]
    pub fn crash_for_test(mut self) {
        drop(self.dir_lock.take());
        std::mem::forget(self);
    }

    /// Test hook: a full checkpoint (truncating the WAL), as happens in time.
    #[doc(hidden)]
    pub fn flush_checkpoint_for_test(&self) {
        let w = lock(&self.writer);
        let r = w
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            });
        debug_assert!(r.is_ok(), "{r:?}");
    }

    /// Test hook: from now on every write fails (as on a disk that turned
    /// read-only or an I/O error), which is not a full disk.
    #[doc(hidden)]
    pub fn fail_writes_for_test(&self) -> Result<()> {
        let w = lock(&self.writer);
        w.conn.execute_batch("PRAGMA query_only = 1;")?;
        Ok(())
    }

    /// Test hook: flip a byte of a record's payload, as a torn write would.
    #[doc(hidden)]
    pub fn corrupt_for_test(&self, seq: u64) -> Result<()> {
        let mut w = lock(&self.writer);
        Self::begin(&mut w)?;
        let p: Option<Vec<u8>> = w
            .conn
            .query_row(
                "SELECT payload FROM entries WHERE seq = ?1",
                [seq as i64],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(mut p) = p {
            p.push(0xff);
            w.conn.execute(
                "UPDATE entries SET payload = ?2 WHERE seq = ?1",
                params![seq as i64, p],
            )?;
        }
        Ok(())
    }
}
