//! A model of the log, checked against the real one (in the style of
//! vector's disk buffer model): random sequences of append, flush, send,
//! ack, clean reopen, crash, and another writer filling the filesystem run
//! on a log in a 3 MiB tmpfs with a 1 MiB bound, so that the drop policy
//! and SQLite's real full disk both happen.
//! After every step the log must agree with a plain in-memory model:
//!
//! * what it holds is exactly what was appended and neither acknowledged
//!   nor dropped, in seq order, byte for byte, with its class;
//! * an entry it no longer holds was acknowledged or lies in a reported
//!   drop run of its class (nothing goes silently);
//! * an entry handed out for sending and not yet acknowledged is never
//!   dropped;
//! * seqs only grow, and a seq the log ever held is never given again,
//!   across reopens and crashes;
//! * a crash loses at most what was not committed (flushed, or committed
//!   by a full disk's recovery).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test program

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use sflog::{Class, DropRun, Log, Options};

#[derive(Debug, Clone)]
enum Op {
    /// Entries of (class, payload bytes).
    Append(Vec<(u8, usize)>),
    Flush,
    /// Hand out up to n entries for sending, in order.
    Send(usize),
    /// Acknowledge this share (per mille) of what was sent.
    Ack(u16),
    Reopen,
    Crash,
    /// Another writer fills the filesystem to the last byte.
    Fill,
    /// ... and removes its file.
    Free,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec((0u8..4, 1usize..48_000), 1..5).prop_map(Op::Append),
        3 => Just(Op::Flush),
        2 => (1usize..20).prop_map(Op::Send),
        2 => (0u16..=1000).prop_map(Op::Ack),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        1 => Just(Op::Fill),
        1 => Just(Op::Free),
    ]
}

/// A small real filesystem, unmounted on drop (the tests run as root, as
/// CI does; a failed mount fails the test).
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn new(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "mounting a {size} tmpfs (needs root)");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

fn payload(seq_hint: u64, len: usize) -> Vec<u8> {
    // distinct per entry, incompressible enough for SQLite not to matter
    (0..len)
        .map(|i| (seq_hint.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8)
        .collect()
}

#[derive(Default)]
struct Model {
    /// Every entry ever appended, by seq: (class, payload).
    appended: BTreeMap<u64, (Class, Vec<u8>)>,
    durable: u64,
    acked: u64,
    /// Handed out for sending (in order): up to here ...
    sent: u64,
    /// ... these seqs exactly (what the reads returned), until acknowledged.
    sent_seqs: std::collections::BTreeSet<u64>,
    /// Drop runs made durable (by a flush) and those since the last flush.
    runs: Vec<DropRun>,
    pending_runs: Vec<DropRun>,
    /// Highest seq the log was ever seen to hold (committed and readable,
    /// or acknowledged): never handed out again. (A seq given up on a full
    /// disk before it was ever stored may come again after a restart: its
    /// drop run was only in memory, so nobody saw it.)
    max_held: u64,
}

impl Model {
    fn dropped(&self, seq: u64, class: Class) -> bool {
        self.runs
            .iter()
            .chain(&self.pending_runs)
            .any(|r| r.class == class && r.first_seq <= seq && seq <= r.last_seq)
    }
}

fn open(dir: &Path) -> Log {
    Log::open(
        dir,
        &Options {
            max_bytes: 1024 * 1024,
            ..Options::default()
        },
    )
    .unwrap()
}

/// The log agrees with the model (see the file's doc); returns the
/// highest seq it holds.
fn check(log: &Log, m: &Model, step: usize, op: &Op) -> Option<u64> {
    let held = log.read_from(m.acked + 1, usize::MAX, usize::MAX).unwrap();
    let mut last = m.acked;
    for e in &held {
        assert!(
            e.seq > last,
            "step {step} ({op:?}): seq {} after {last}",
            e.seq
        );
        last = e.seq;
        let (class, p) = m
            .appended
            .get(&e.seq)
            .unwrap_or_else(|| panic!("step {step} ({op:?}): seq {} was never appended", e.seq));
        assert_eq!(e.class, *class, "step {step}: class of {}", e.seq);
        assert!(e.payload == *p, "step {step}: payload of {} differs", e.seq);
    }
    let top = held.last().map(|e| e.seq);
    let held: std::collections::BTreeSet<u64> = held.iter().map(|e| e.seq).collect();
    for (&seq, (class, _)) in m
        .appended
        .range(m.acked + 1..)
        .take_while(|(s, _)| **s <= m.durable)
    {
        if held.contains(&seq) {
            continue;
        }
        assert!(
            !m.sent_seqs.contains(&seq),
            "step {step} ({op:?}): seq {seq} was sent and not acknowledged, and is gone"
        );
        assert!(
            m.dropped(seq, *class),
            "step {step} ({op:?}): seq {seq} ({}) is gone without a drop run",
            class.name()
        );
    }
    top
}

/// The files of a log as a crash leaves them (everything but its lock),
/// copied to a new filesystem of the same size: in this process the
/// crashed log's connections stay open (a real crash closes them), so the
/// log reopens from the copy, as it would from the disk after a power cut.
fn crashed_copy(from: &Path, disks: &mut Vec<Tmpfs>) -> std::path::PathBuf {
    let fs = Tmpfs::new("3m");
    let to = fs.0.path().join("log");
    std::fs::create_dir_all(&to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "lock" {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
    disks.push(fs);
    to
}

/// Runs `ops`; returns (drop runs reported, full-disk events of the last log).
fn run(ops: &[Op]) -> (usize, u64) {
    let mut disks = vec![Tmpfs::new("3m")];
    let mut dir = disks[0].0.path().join("log");
    let mut log = Some(open(&dir));
    let mut m = Model::default();
    let mut ts = 0i64;
    let mut full_events = 0;
    for (step, op) in ops.iter().enumerate() {
        let l = log.as_ref().unwrap();
        match op {
            Op::Append(items) => {
                let next = l.stats().next_seq;
                let batch: Vec<(Class, i64, Vec<u8>)> = items
                    .iter()
                    .enumerate()
                    .map(|(i, (c, len))| {
                        ts += 1;
                        (Class::ALL[*c as usize], ts, payload(next + i as u64, *len))
                    })
                    .collect();
                let (first, runs) = l.append(&batch).unwrap();
                assert!(
                    first > m.max_held,
                    "step {step}: seq {first} given again (held through {})",
                    m.max_held
                );
                for (i, (c, _, p)) in batch.into_iter().enumerate() {
                    m.appended.insert(first + i as u64, (c, p));
                }
                m.pending_runs.extend(runs);
            }
            Op::Flush => {
                m.durable = l.flush().unwrap();
                m.runs.append(&mut m.pending_runs);
            }
            Op::Send(n) => {
                let from = m.sent.max(m.acked) + 1;
                let got = l.read_for_send(from, *n, usize::MAX).unwrap();
                m.sent_seqs.extend(got.iter().map(|e| e.seq));
                if let Some(e) = got.last() {
                    m.sent = e.seq;
                }
            }
            Op::Ack(share) => {
                let span = m.sent.saturating_sub(m.acked);
                let upto = m.acked + span * u64::from(*share) / 1000;
                if upto > m.acked {
                    l.ack(upto).unwrap();
                    // an ack commits what was appended first
                    m.durable = l.stats().durable_seq;
                    m.max_held = m.max_held.max(upto);
                    m.runs.append(&mut m.pending_runs);
                    m.acked = upto;
                    m.sent_seqs.retain(|&s| s > upto);
                }
            }
            Op::Reopen => {
                // an orderly close: flush, take what it had to give up
                // (the agent records it as a gap), then close
                m.durable = l.flush().unwrap();
                m.pending_runs.extend(l.take_drops().unwrap());
                m.runs.append(&mut m.pending_runs);
                full_events += l.stats().disk_full_events;
                drop(log.take());
                let l = open(&dir);
                // what it gave up may be handed out again (never held)
                let next = l.stats().next_seq;
                m.appended.retain(|&s, _| s < next);
                m.durable = next - 1;
                log = Some(l);
                m.sent = m.acked;
                m.sent_seqs.clear();
            }
            Op::Fill => {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.with_file_name("filler"))
                    .unwrap();
                let block = vec![0u8; 4096];
                while f.write_all(&block).is_ok() {}
                let _ = f.sync_all();
            }
            Op::Free => {
                let _ = std::fs::remove_file(dir.with_file_name("filler"));
            }
            Op::Crash => {
                let crashed = log.take().unwrap();
                full_events += crashed.stats().disk_full_events;
                dir = crashed_copy(&dir, &mut disks);
                crashed.crash_for_test();
                // what was not committed is gone (a full disk's recovery
                // may have committed more than the last flush): the log
                // resumes after what it kept, and those seqs are free again
                let l = open(&dir);
                let next = l.stats().next_seq;
                m.appended.retain(|&s, _| s < next);
                m.durable = next - 1;
                log = Some(l);
                m.sent = m.acked;
                m.sent_seqs.clear();
            }
        }
        let l = log.as_ref().unwrap();
        // drops made while recovering from a full disk are handed out here
        m.pending_runs.extend(l.take_drops().unwrap());
        // a reopened log resumes after everything it ever held
        assert!(
            l.stats().next_seq > m.max_held,
            "step {step} ({op:?}): next seq {} not past {}",
            l.stats().next_seq,
            m.max_held
        );
        if let Some(top) = check(l, &m, step, op) {
            m.max_held = m.max_held.max(top);
        }
    }
    full_events += log.as_ref().map_or(0, |l| l.stats().disk_full_events);
    (m.runs.len() + m.pending_runs.len(), full_events)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn the_log_holds_what_the_model_says_through_appends_acks_drops_reopens_crashes_and_a_full_disk(
        ops in prop::collection::vec(op(), 1..60)
    ) {
        run(&ops);
    }
}

/// A fixed sequence that fills the filesystem for sure (the random ones
/// may not): 3 MiB of payload into a 3 MiB tmpfs, sent in part, acked,
/// crashed, reopened.
#[test]
fn a_full_disk_sequence_keeps_the_model() {
    let mut ops = Vec::new();
    for i in 0..70 {
        ops.push(Op::Append(vec![((i % 4) as u8, 45_000)]));
        if i % 5 == 4 {
            ops.push(Op::Flush);
        }
        if i % 20 == 10 {
            ops.push(Op::Send(6));
            ops.push(Op::Ack(500));
        }
        if i == 30 {
            ops.push(Op::Fill);
        }
        if i == 40 {
            ops.push(Op::Crash);
            ops.push(Op::Fill);
        }
        if i == 50 {
            ops.push(Op::Free);
        }
        if i == 55 {
            ops.push(Op::Reopen);
        }
    }
    let (runs, full) = run(&ops);
    // the sequence did what it is for: the bound dropped and the disk filled
    assert!(runs > 0, "no drops");
    assert!(full > 0, "the disk never filled");
}
