//! Replays every committed fuzz input (`fuzz/corpus/<target>/*`, and the
//! crash reproducers in `fuzz/regressions/<target>/*`) through its target
//! on stable. A corpus that went missing fails the test: it cannot pass by
//! replaying nothing.
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[test]
fn every_committed_fuzz_input_runs_through_its_target_without_a_panic_and_quickly() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    for (name, target) in fuzz_replay::TARGETS {
        let mut n = 0;
        for dir in ["corpus", "regressions"] {
            let Ok(rd) = std::fs::read_dir(root.join(dir).join(name)) else {
                continue;
            };
            for entry in rd {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let t = Instant::now();
                target(&data);
                assert!(
                    t.elapsed() < Duration::from_secs(2),
                    "{name}: {} took {:?}",
                    path.display(),
                    t.elapsed()
                );
                n += 1;
            }
        }
        assert!(n >= 5, "{name}: only {n} corpus files replayed");
        eprintln!("{name}: {n} inputs replayed");
    }
}
