"""How long a console page takes to render in headless Chromium (Debian's,
through chromium-driver): logs in, loads each --path --runs times (the
browser's cache warm after the first, as an operator's), and prints per
path the p50 and p99 of the navigation's load event (request start to
onload: server time, transfer, parse, style) and of the first frame
after it (two animation frames after onload: layout and paint of the
server-drawn SVG done), from the page's own clock (`performance.now()`
counts from the navigation's start). The frame time includes the
driver's round trip after onload, so it errs long.

    python console_timing.py --url http://127.0.0.1:PORT --user U \
        --password P --path /sites/x?range=1y [--path ...] [--runs 20]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import console_browser as cb  # noqa: E402


def pct(v, q):
    v = sorted(v)
    return v[round((len(v) - 1) * q)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--path", action="append", required=True)
    ap.add_argument("--runs", type=int, default=20)
    a = ap.parse_args()
    d = cb.browser()
    try:
        cb.login(d, a.url, a.user, a.password, "/")
        for path in a.path:
            load, frame, svg = [], [], 0
            for _ in range(a.runs):
                d.get(a.url + path)
                t = d.execute_async_script(
                    "const done = arguments[arguments.length - 1];"
                    "const n = performance.getEntriesByType('navigation')[0];"
                    "requestAnimationFrame(() => requestAnimationFrame(() => done("
                    "[n.loadEventEnd - n.startTime, performance.now(),"
                    " document.querySelectorAll('svg.chart path').length])));")
                load.append(t[0])
                frame.append(t[1])
                svg = t[2]
            print(f"{path}\tload p50 {pct(load, 0.5):.0f} ms p99 {pct(load, 0.99):.0f} ms"
                  f"\tpainted p50 {pct(frame, 0.5):.0f} ms p99 {pct(frame, 0.99):.0f} ms"
                  f"\tchart paths {svg}", flush=True)
    finally:
        d.quit()


if __name__ == "__main__":
    main()
