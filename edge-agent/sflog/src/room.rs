//! The drop policy: making room under the byte bound by dropping the
//! oldest entries of the lowest class first (never an entry on the wire),
//! as gap runs. See the crate docs, "Bound and drop policy".

use super::*;

impl Log {
    /// Drops entries until `incoming` more bytes fit under the bound.
    pub(crate) fn make_room(
        &self,
        w: &mut Writer,
        incoming: u64,
        runs: &mut Vec<DropRun>,
    ) -> rusqlite::Result<()> {
        let max = self.effective_bound();
        let before = runs.len();
        if self.used_bytes(&w.conn)? + incoming <= max {
            return Ok(());
        }
        // free down to 95 % of the bound so that drops come in chunks
        let target = max - max / 20;
        let protected = self.sent_through.load(Ordering::SeqCst) as i64;
        let classes: Vec<Option<Class>> = match self.opts.policy {
            DropPolicy::Priority => Class::ALL.iter().copied().map(Some).collect(),
            DropPolicy::Oldest => vec![None],
        };
        let previewed = lock(&self.previewed).clone();
        let is_previewed = |seq: i64| {
            previewed
                .iter()
                .any(|&(lo, hi)| lo as i64 <= seq && seq <= hi as i64)
        };
        for class in classes {
            let mut after = protected;
            loop {
                let used = self.used_bytes(&w.conn)?;
                if used + incoming <= target {
                    return Ok(());
                }
                let n = self.count.load(Ordering::Relaxed).max(1);
                let per_row = (used / n).max(1);
                let rows = ((used + incoming - target) / per_row).clamp(64, 100_000) as i64;
                let sel = match class {
                    Some(_) => {
                        "SELECT seq, class, ts FROM entries WHERE class = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
                    }
                    None => {
                        "SELECT seq, class, ts FROM entries WHERE ?1 >= 0 AND seq > ?2 ORDER BY seq LIMIT ?3"
                    }
                };
                let selected: Vec<(i64, u8, i64)> = w
                    .conn
                    .prepare_cached(sel)?
                    .query_map(
                        params![class.map(|c| c as i64).unwrap_or(0), after, rows],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )?
                    .collect::<rusqlite::Result<_>>()?;
                let Some(last) = selected.last() else {
                    break; // nothing of this class left: next class
                };
                after = last.0;
                let victims: Vec<(i64, u8, i64)> = selected
                    .into_iter()
                    .filter(|v| !is_previewed(v.0))
                    .collect();
                self.count
                    .fetch_sub(victims.len() as u64, Ordering::Relaxed);
                for r in runs_of(&victims, "disk_full") {
                    self.dropped[r.class as usize].fetch_add(r.count, Ordering::Relaxed);
                    runs.push(r);
                }
                let start = w.ops.len();
                w.ops.extend(victims.iter().map(|v| Op::Delete {
                    seq: v.0,
                    class: v.1,
                }));
                for op in &w.ops[start..] {
                    op.exec(&w.conn)?;
                }
            }
        }
        if runs.len() > before || self.used_bytes(&w.conn)? + incoming > max {
            tracing::warn!(
                dropped = runs[before..].iter().map(|r| r.count).sum::<u64>(),
                bound = max,
                max_bytes = self.opts.max_bytes,
                fs_free = self.fs_free.load(Ordering::Relaxed),
                "log full: dropped entries"
            );
        }
        Ok(())
    }
}
