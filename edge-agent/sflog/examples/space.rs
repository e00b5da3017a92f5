//! Measures the on-disk footprint of the log under outage-like churn:
//! append N readings-sized entries, trim them all (ack), repeat. Prints the
//! logical bytes the log accounts for and the bytes the directory really
//! takes. Run: `cargo run --release -p sflog --example space -- 200000 5`
use std::time::Instant;

fn dir_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let cycles: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let dir = tempfile::tempdir()?;
    let log = sflog::Log::open(dir.path(), &sflog::Options::default())?;
    let payload = vec![7u8; 110]; // a protobuf Reading is ~100-120 bytes
    println!("cycle,appended,logical_bytes,disk_bytes_full,disk_bytes_after_trim,append_per_s");
    for c in 0..cycles {
        let t = Instant::now();
        for chunk in 0..n / 1000 {
            let items: Vec<_> = (0..1000)
                .map(|i| {
                    (
                        sflog::Class::Telemetry,
                        (chunk * 1000 + i) as i64,
                        payload.clone(),
                    )
                })
                .collect();
            log.append(&items)?;
        }
        log.flush()?;
        let rate = n as f64 / t.elapsed().as_secs_f64();
        let logical = log.stats().bytes;
        let full = dir_size(dir.path());
        let last = log.stats().next_seq - 1;
        log.ack(last)?;
        log.flush()?;
        std::thread::sleep(std::time::Duration::from_secs(2));
        let after = dir_size(dir.path());
        println!("{c},{n},{logical},{full},{after},{rate:.0}");
    }
    Ok(())
}
