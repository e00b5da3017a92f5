#!/usr/bin/env python3
"""gzip (level 6, tonic's) and zstd (level 3, tonic's) on the uplink's own
messages, as `cargo run -p e2e --example batch_sizes` wrote them: bytes
saved per message and CPU per message, for live-sized and backlog-sized
batches (issue 30, docs/adr/0013). Each gRPC message is compressed on its
own (per-message compression), so that is what is measured; the first
message of each kind (the session's point definitions) is left out."""
import gzip, sys, time, pathlib

try:
    import zstandard
except ImportError:
    zstandard = None

root = pathlib.Path(sys.argv[1])
print("batch    messages  raw B/msg  gzip B/msg (x)   zstd B/msg (x)   gzip us/msg  zstd us/msg")
for kind in ("live", "backlog"):
    files = sorted((root / kind).glob("*.bin"))[1:]
    msgs = [f.read_bytes() for f in files]
    raw = sum(map(len, msgs))
    t = time.process_time()
    gz = sum(len(gzip.compress(m, 6, mtime=0)) for m in msgs)
    tg = (time.process_time() - t) / len(msgs) * 1e6
    if zstandard:
        c = zstandard.ZstdCompressor(level=3)
        t = time.process_time()
        zs = sum(len(c.compress(m)) for m in msgs)
        tz = (time.process_time() - t) / len(msgs) * 1e6
    else:
        zs, tz = float("nan"), float("nan")
    n = len(msgs)
    print(f"{kind:8} {n:9} {raw/n:10.0f} {gz/n:10.0f} ({raw/gz:.2f}) {zs/n:10.0f} ({raw/zs:.2f}) {tg:12.0f} {tz:12.0f}")
