//! Reading the log for sending (in seq order, newest-first previews) and
//! the corrupt records found on the way, handed out once as gap runs. See
//! the crate docs, "Corruption".

use super::*;

impl Log {
    /// Reads committed entries with seq >= `from`, at most `max_count`
    /// entries and about `max_bytes` bytes of payload. Corrupt records are
    /// skipped (see [`Log::take_corrupt`]).
    pub fn read_from(&self, from: u64, max_count: usize, max_bytes: usize) -> Result<Vec<Entry>> {
        self.read(READ_FROM, from, max_count, max_bytes, Protect::No)
    }

    /// [`Log::read_from`] for sending: in the same step, protects what it
    /// returns from the drop policy (see [`Log::set_sent_through`]), so an
    /// entry can never be both sent and counted as dropped.
    pub fn read_for_send(
        &self,
        from: u64,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>> {
        self.read(READ_FROM, from, max_count, max_bytes, Protect::InOrder)
    }

    /// The newest committed entries with seq > `after` (at most
    /// `max_count`), oldest first, protected as a preview ([`Log::mark_previewed`]).
    pub fn read_newest_for_preview(&self, after: u64, max_count: usize) -> Result<Vec<Entry>> {
        let mut v = self.read(READ_NEWEST, after, max_count, usize::MAX, Protect::Preview)?;
        v.reverse();
        Ok(v)
    }

    /// The oldest committed entries with seq > `after` that are not
    /// telemetry (alarms, events, command acks: the control lane, sent
    /// ahead of a telemetry backlog), at most `max_count`, protected as a
    /// preview ([`Log::mark_previewed`]).
    pub fn read_control_for_preview(&self, after: u64, max_count: usize) -> Result<Vec<Entry>> {
        self.read(READ_CONTROL, after, max_count, usize::MAX, Protect::Preview)
    }

    // Reads go through the writer's connection, under its lock: it sees the
    // drops of its own open transaction, and `seq <= durable` hides appends
    // not yet committed. Protection is set before the lock is released.
    pub(crate) fn read(
        &self,
        sql: &str,
        seq: u64,
        max_count: usize,
        max_bytes: usize,
        protect: Protect,
    ) -> Result<Vec<Entry>> {
        let w = lock(&self.writer);
        let durable = self.durable_seq().min(i64::MAX as u64) as i64;
        let mut stmt = w.conn.prepare_cached(sql)?;
        let mut rows = stmt.query(params![
            seq.min(i64::MAX as u64) as i64,
            max_count.min(i64::MAX as usize) as i64,
            durable
        ])?;
        let mut out = Vec::new();
        let mut size = 0;
        while let Some(r) = rows.next()? {
            let seq = r.get::<_, i64>(0)? as u64;
            let class: i64 = r.get(1)?;
            let ts: i64 = r.get(2)?;
            let sum: i64 = r.get(3)?;
            // a payload that is not a blob is as corrupt as a bad checksum
            let payload: Vec<u8> = match r.get_ref(4)? {
                rusqlite::types::ValueRef::Blob(b) => b.to_vec(),
                _ => Vec::new(),
            };
            let class_byte = u8::try_from(class).unwrap_or(0);
            let class = u8::try_from(class).ok().and_then(Class::from_u8);
            match class {
                Some(c) if i64::from(crc(c as u8, ts, &payload)) == sum => {
                    size += payload.len();
                    out.push(Entry {
                        seq,
                        class: c,
                        appended_ms: ts,
                        payload,
                    });
                }
                _ => {
                    if lock(&self.corrupt_seen)
                        .insert(seq, (class_byte, ts))
                        .is_none()
                    {
                        tracing::warn!(seq, "skipping corrupt log record (checksum mismatch)");
                        self.corrupt.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if size >= max_bytes {
                break;
            }
        }
        if let (Some(lo), Some(hi)) = (
            out.iter().map(|e| e.seq).min(),
            out.iter().map(|e| e.seq).max(),
        ) {
            match protect {
                Protect::No => {}
                Protect::InOrder => self.set_sent_through(hi),
                Protect::Preview => self.mark_previewed(lo, hi),
            }
        }
        Ok(out)
    }

    /// Deletes the corrupt records found so far and returns them as runs
    /// (reason `corrupt`), each once.
    pub fn take_corrupt(&self) -> Result<Vec<DropRun>> {
        let found: Vec<(u64, (u8, i64))> = std::mem::take(&mut *lock(&self.corrupt_seen))
            .into_iter()
            .collect();
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let mut w = lock(&self.writer);
        // the rows may be gone already (an ack past them trimmed them): the
        // gap is reported all the same, from what the read saw
        let mut present = 0u64;
        for &(s, _) in &found {
            present += w.conn.query_row(
                "SELECT COUNT(*) FROM entries WHERE seq = ?1",
                [s as i64],
                |r| r.get::<_, i64>(0),
            )? as u64;
        }
        let ops = found
            .iter()
            .map(|&(seq, (class, _))| Op::Delete {
                seq: seq as i64,
                class,
            })
            .collect();
        self.run_ops(&mut w, ops)?;
        self.count.fetch_sub(
            present.min(self.count.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        Ok(found
            .iter()
            .map(|&(seq, (class, ts))| DropRun {
                first_seq: seq,
                last_seq: seq,
                count: 1,
                class: Class::from_u8(class).unwrap_or(Class::Telemetry),
                from_ms: ts,
                to_ms: ts,
                reason: "corrupt",
            })
            .collect())
    }
}
