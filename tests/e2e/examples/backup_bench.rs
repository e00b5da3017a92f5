//! Benchmark: `headend backup` of a SQLite database while ingest goes on.
//! Writes N readings through the store (the fleet of `store_bench`), then
//! backs the database up while a writer keeps committing, and measures:
//! * the backup's time and size, against copying the same file with
//!   `cp` semantics and an fsync (the disk's limit, same run): a ratio;
//! * the commits during the backup and the longest one (WAL: a reader
//!   does not block the writer);
//! * the restore's time (checks, copy, fsync) against the same copy.
//!
//! `cargo run --release -p e2e --example backup_bench -- [READINGS]`
//! (default 2,000,000)
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use e2e::fleet_fill::{FIELDS, Fleet, SITES, TANKS};
use headend::store::{Db, backup};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let work = tempfile::tempdir()?;
    let url = e2e::sqlite_url(work.path());
    let db = Db::connect(&url, 4).await?;
    let points = (SITES * TANKS * FIELDS.len()) as u64;
    let minutes = n / points + 10_000;
    let mut fleet = Fleet::new(&db, minutes).await?;
    let filled = n / points;
    let mut m = 0;
    while m < filled {
        let span = Fleet::per_commit().min(filled - m);
        fleet.write(&db, m, span).await?;
        m += span;
    }
    let file = work.path().join("headend.db");
    println!(
        "{} readings stored: {:.1} MiB (and its WAL)",
        filled * points,
        std::fs::metadata(&file)?.len() as f64 / 1048576.0
    );

    // the physical limit: the same bytes copied and synced
    let copy = work.path().join("copy.db");
    let t = Instant::now();
    std::fs::copy(&file, &copy)?;
    std::fs::File::open(&copy)?.sync_all()?;
    let cp = t.elapsed();
    std::fs::remove_file(&copy)?;

    // the backup while a writer commits
    let going = Arc::new(AtomicBool::new(true));
    let commits = Arc::new(AtomicU64::new(0));
    let worst = Arc::new(AtomicU64::new(0));
    let writer = {
        let (db, going, commits, worst) =
            (db.clone(), going.clone(), commits.clone(), worst.clone());
        tokio::spawn(async move {
            let mut m = filled;
            while going.load(Ordering::Relaxed) && m < minutes {
                let t = Instant::now();
                fleet.write(&db, m, 1).await?;
                worst.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                commits.fetch_add(1, Ordering::Relaxed);
                m += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok(())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = commits.load(Ordering::Relaxed);
    let to = work.path().join("backup.db");
    let (url2, to2) = (url.clone(), to.clone());
    let t = Instant::now();
    let summary = tokio::task::spawn_blocking(move || backup::backup(&url2, &to2)).await??;
    let took = t.elapsed();
    let during = commits.load(Ordering::Relaxed) - before;
    going.store(false, Ordering::Relaxed);
    writer.await??;
    println!("backup: {summary}");
    println!(
        "backup took {took:.2?} ({:.1} MiB/s); copy + fsync of the same file {cp:.2?}: ratio {:.2}",
        summary.bytes as f64 / 1048576.0 / took.as_secs_f64(),
        took.as_secs_f64() / cp.as_secs_f64()
    );
    println!(
        "ingest during the backup: {during} commits, the longest {:.1} ms",
        worst.load(Ordering::Relaxed) as f64 / 1000.0
    );
    let target = tempfile::tempdir()?;
    let url3 = e2e::sqlite_url(target.path());
    let t = Instant::now();
    let r = tokio::task::spawn_blocking(move || backup::restore(&to, &url3, false, 0)).await??;
    let rt = t.elapsed();
    println!(
        "restore (checks, copy, fsync) {rt:.2?}: ratio {:.2} to the copy; {}",
        rt.as_secs_f64() / cp.as_secs_f64(),
        r.summary
    );
    Ok(())
}
