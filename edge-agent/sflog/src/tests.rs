//! The log's own tests (helpers here are shared with the other modules' tests).
use super::*;
use std::collections::BTreeSet;
use std::path::Path;

pub(crate) fn items(n: usize) -> Vec<(Class, i64, Vec<u8>)> {
    (0..n)
        .map(|i| (Class::Telemetry, i as i64, format!("r{i}").into_bytes()))
        .collect()
}

pub(crate) fn open(dir: &Path) -> Log {
    Log::open(dir, &Options::default()).unwrap()
}

/// The seqs of every committed entry.
pub(crate) fn kept(log: &Log) -> BTreeSet<u64> {
    log.read_from(1, usize::MAX, usize::MAX)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect()
}

#[test]
fn a_log_open_in_one_place_cannot_be_opened_in_another_until_it_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    match Log::open(dir.path(), &Options::default()) {
        Err(Error::InUse { path }) => assert!(path.contains(&*dir.path().to_string_lossy())),
        other => panic!("a second writer must be refused: {:?}", other.map(|_| ())),
    }
    drop(log);
    open(dir.path());
}

#[test]
fn sequence_numbers_increase_and_survive_reopen_and_full_trim() {
    let dir = tempfile::tempdir().unwrap();
    let id;
    {
        let log = open(dir.path());
        id = log.log_id();
        assert_eq!(log.append(&items(3)).unwrap().0, 1);
        assert_eq!(log.append(&items(2)).unwrap().0, 4);
        log.flush().unwrap();
        assert_eq!(log.ack(5).unwrap(), 5);
        log.flush().unwrap();
    }
    let log = open(dir.path());
    assert_eq!(log.log_id(), id, "log id is stable");
    assert_eq!(
        log.append(&items(1)).unwrap().0,
        6,
        "a seq is never reused, even after a full trim"
    );
}

#[test]
fn only_committed_entries_are_readable_and_acks_trim() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(&items(10)).unwrap();
    assert!(
        log.read_from(1, 100, 1 << 20).unwrap().is_empty(),
        "not flushed yet"
    );
    log.flush().unwrap();
    let e = log.read_from(1, 4, 1 << 20).unwrap();
    assert_eq!(
        e.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(e[2].payload, b"r2");
    let newest: Vec<u64> = log
        .read_newest_for_preview(4, 3)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(newest, vec![8, 9, 10], "the newest three, oldest first");
    log.ack(4).unwrap();
    log.flush().unwrap();
    assert_eq!(log.first_seq().unwrap(), Some(5));
    assert_eq!(log.stats().entries, 6);
    assert_eq!(
        log.ack(3).unwrap(),
        0,
        "acks are cumulative; an older ack is a no-op"
    );
}

#[test]
fn unflushed_entries_vanish_in_a_crash_and_their_seqs_are_reassigned() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        log.append(&items(3)).unwrap();
        log.flush().unwrap();
        log.append(&items(2)).unwrap();
        log.crash_for_test(); // no drop, no commit: as if killed
    }
    let log = open(dir.path());
    assert_eq!(log.stats().next_seq, 4);
    assert_eq!(log.read_from(1, 100, 1 << 20).unwrap().len(), 3);
}

#[test]
fn a_corrupt_record_is_skipped_counted_reported_once_and_does_not_block_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(&items(5)).unwrap();
    log.flush().unwrap();
    log.corrupt_for_test(3).unwrap();
    log.flush().unwrap();
    let seqs: Vec<u64> = log
        .read_from(1, 100, 1 << 20)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, vec![1, 2, 4, 5]);
    log.read_from(1, 100, 1 << 20).unwrap();
    assert_eq!(log.stats().corrupt, 1, "counted once");
    let runs = log.take_corrupt().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!((runs[0].first_seq, runs[0].reason), (3, "corrupt"));
    assert!(log.take_corrupt().unwrap().is_empty());
    assert_eq!(log.stats().entries, 4);
}

#[test]
fn a_full_log_drops_oldest_telemetry_first_and_keeps_alarms() {
    let dir = tempfile::tempdir().unwrap();
    let max = 2 * 1024 * 1024;
    let log = Log::open(
        dir.path(),
        &Options {
            max_bytes: max,
            policy: DropPolicy::Priority,
        },
    )
    .unwrap();
    let payload = vec![1u8; 200];
    let mut alarms = Vec::new();
    let mut runs = Vec::new();
    for round in 0..60 {
        let mut batch: Vec<(Class, i64, Vec<u8>)> = (0..500)
            .map(|i| (Class::Telemetry, i, payload.clone()))
            .collect();
        batch.push((Class::Alarm, round, b"alarm".to_vec()));
        let (first, r) = log.append(&batch).unwrap();
        alarms.push(first + 500);
        runs.extend(r);
        log.flush().unwrap();
        assert!(
            log.stats().bytes <= max,
            "over the bound: {} > {max}",
            log.stats().bytes
        );
    }
    assert!(!runs.is_empty(), "30,000 x 200 B cannot fit in 2 MiB");
    assert!(
        runs.iter()
            .all(|r| r.class == Class::Telemetry && r.reason == "disk_full")
    );
    let st = log.stats();
    assert_eq!(st.dropped[0], runs.iter().map(|r| r.count).sum::<u64>());
    assert_eq!(st.dropped[1], 0);
    let kept = kept(&log);
    assert!(
        alarms.iter().all(|a| kept.contains(a)),
        "every alarm survived"
    );
    // dropped + kept = appended
    assert_eq!(st.dropped[0] + kept.len() as u64, 60 * 501);
    // the newest telemetry is kept, the oldest is gone
    assert!(kept.contains(&(60 * 501 - 1)) && !kept.contains(&1));
    // the file on disk respects the bound (plus the capped WAL)
    let on_disk: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        on_disk <= max + WAL_BYTES + 64 * 1024,
        "{on_disk} bytes on disk"
    );
}

#[test]
fn entries_on_the_wire_are_never_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(
        dir.path(),
        &Options {
            max_bytes: 1024 * 1024,
            policy: DropPolicy::Oldest,
        },
    )
    .unwrap();
    log.append(
        &(0..100)
            .map(|i| (Class::Telemetry, i, vec![0u8; 100]))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    log.flush().unwrap();
    log.set_sent_through(100);
    log.set_sent_through(50); // monotonic: an older watermark does not unprotect
    log.append(
        &(0..100)
            .map(|i| (Class::Telemetry, i, vec![0u8; 100]))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    log.mark_previewed(151, 160); // sent ahead as a preview
    let mut dropped = Vec::new();
    for _ in 0..30 {
        let (_, r) = log
            .append(
                &(0..500)
                    .map(|i| (Class::Telemetry, i, vec![0u8; 200]))
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        dropped.extend(r);
        log.flush().unwrap();
    }
    assert!(!dropped.is_empty());
    assert!(dropped.iter().all(|r| r.first_seq > 100), "{dropped:?}");
    assert_eq!(log.first_seq().unwrap(), Some(1));
    let kept = kept(&log);
    assert!(
        (151..=160).all(|s| kept.contains(&s)),
        "previewed entries survive"
    );
    assert!(
        !kept.contains(&150) && !kept.contains(&161),
        "their neighbours do not"
    );
}

#[test]
fn drops_of_one_class_and_reason_coalesce_into_one_run_whatever_their_number() {
    let run = |first: u64, class: Class, reason: &'static str| DropRun {
        first_seq: first,
        last_seq: first,
        count: 1,
        class,
        from_ms: first as i64 * 10,
        to_ms: first as i64 * 10,
        reason,
    };
    let mut runs: Vec<DropRun> = (100..1100)
        .map(|s| run(s, Class::Telemetry, "disk_full"))
        .collect();
    runs.push(run(7, Class::Event, "disk_full"));
    runs.push(run(50, Class::Telemetry, "corrupt"));
    runs.push(run(3, Class::Telemetry, "disk_full"));
    let out = coalesce(runs);
    let got: Vec<(Class, &str, u64, u64, u64, i64, i64)> = out
        .iter()
        .map(|r| {
            (
                r.class,
                r.reason,
                r.first_seq,
                r.last_seq,
                r.count,
                r.from_ms,
                r.to_ms,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (Class::Telemetry, "corrupt", 50, 50, 1, 500, 500),
            (Class::Telemetry, "disk_full", 3, 1099, 1001, 30, 10990),
            (Class::Event, "disk_full", 7, 7, 1, 70, 70),
        ]
    );
}

#[test]
fn a_corrupt_record_trimmed_by_an_ack_before_its_gap_was_taken_is_still_reported() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(&items(5)).unwrap();
    log.flush().unwrap();
    log.corrupt_for_test(3).unwrap();
    log.flush().unwrap();
    log.read_for_send(1, 100, 1 << 20).unwrap(); // sends 1, 2, 4, 5
    log.ack(5).unwrap(); // the headend acknowledged through 5
    let runs = log.take_drops().unwrap();
    assert_eq!(
        runs.iter()
            .map(|r| (r.first_seq, r.count, r.reason))
            .collect::<Vec<_>>(),
        vec![(3, 1, "corrupt")]
    );
    assert_eq!(log.stats().entries, 0);
}

/// A log with 300 entries (100 acknowledged), closed; returns its id.
fn a_closed_log(dir: &Path) -> u64 {
    let log = open(dir);
    log.append(&items(300)).unwrap();
    log.flush().unwrap();
    log.ack(100).unwrap();
    let id = log.log_id();
    drop(log);
    id
}

fn opens_anew_after_damage(dir: &Path, old: u64) -> Damage {
    let log = Log::open(dir, &Options::default()).expect("a damaged log never stops the agent");
    assert_ne!(log.log_id(), old, "a new log, a new id");
    let d = log.take_damage().expect("the damage is reported");
    assert!(log.take_damage().is_none(), "once");
    assert!(
        std::path::Path::new(&d.moved_to).exists(),
        "kept aside: {d:?}"
    );
    let (first, _) = log.append(&items(3)).unwrap();
    log.flush().unwrap();
    assert_eq!(first, 1);
    assert_eq!(kept(&log).len(), 3, "the new log works");
    drop(log);
    let again = Log::open(dir, &Options::default()).unwrap();
    assert!(again.take_damage().is_none(), "the new log is sound");
    d
}

#[test]
fn a_truncated_log_file_is_moved_aside_and_a_new_log_starts() {
    let dir = tempfile::tempdir().unwrap();
    let old = a_closed_log(dir.path());
    let path = dir.path().join("log.sqlite");
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let d = opens_anew_after_damage(dir.path(), old);
    eprintln!("{d:?}");
}

#[test]
fn a_log_file_with_flipped_bytes_in_its_pages_is_moved_aside_and_what_it_held_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let old = a_closed_log(dir.path());
    let path = dir.path().join("log.sqlite");
    let mut bytes = std::fs::read(&path).unwrap();
    // 20 bytes in the b-tree page headers of pages 3 and 4
    for page in [2usize, 3] {
        for i in 0..10 {
            bytes[page * 4096 + i] ^= 0x5a;
        }
    }
    std::fs::write(&path, bytes).unwrap();
    let d = opens_anew_after_damage(dir.path(), old);
    assert_eq!(d.old_log_id, Some(old), "{d:?}");
}

#[test]
fn impossible_sequence_numbers_are_damage_not_an_acked_seq_near_2_pow_64() {
    let dir = tempfile::tempdir().unwrap();
    let old = a_closed_log(dir.path());
    let c = Connection::open(dir.path().join("log.sqlite")).unwrap();
    c.execute("UPDATE entries SET seq = -1668 WHERE seq = 101", [])
        .unwrap();
    drop(c);
    let d = opens_anew_after_damage(dir.path(), old);
    assert!(d.why.contains("impossible"), "{d:?}");
    assert_eq!(d.old_log_id, Some(old));
}

#[test]
fn the_control_lane_reads_alarms_events_and_acks_in_order_skipping_telemetry() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let mut v = items(6); // telemetry 1..=6
    v[1].0 = Class::CommandAck; // 2
    v[3].0 = Class::Alarm; // 4
    v[4].0 = Class::Event; // 5
    log.append(&v).unwrap();
    assert!(
        log.read_control_for_preview(0, 10).unwrap().is_empty(),
        "not flushed yet"
    );
    log.flush().unwrap();
    let seqs = |after, max| -> Vec<u64> {
        log.read_control_for_preview(after, max)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect()
    };
    assert_eq!(seqs(0, 10), vec![2, 4, 5]);
    assert_eq!(seqs(2, 1), vec![4], "after a seq, oldest first, bounded");
    assert_eq!(seqs(5, 10), Vec::<u64>::new());
}
