"""How long a console page takes to render in headless Chromium (Debian's,
through chromium-driver): logs in, loads each --path --runs times (the
browser's cache warm after the first, as an operator's), and prints per
path the p50 and p99 of the navigation's load event (request start to
onload: server time, transfer, parse, style, layout of the server-drawn
SVG) and of the first contentful paint, from the page's own
Performance API.

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
            load, paint, svg = [], [], 0
            for _ in range(a.runs):
                d.get(a.url + path)
                t = d.execute_script(
                    "const n = performance.getEntriesByType('navigation')[0];"
                    "const p = performance.getEntriesByName('first-contentful-paint')[0];"
                    "return [n.loadEventEnd - n.startTime, p ? p.startTime : -1,"
                    " document.querySelectorAll('svg.chart path').length];")
                load.append(t[0])
                paint.append(t[1])
                svg = t[2]
            print(f"{path}\tload p50 {pct(load, 0.5):.0f} ms p99 {pct(load, 0.99):.0f} ms"
                  f"\tfirst paint p50 {pct(paint, 0.5):.0f} ms p99 {pct(paint, 0.99):.0f} ms"
                  f"\tchart paths {svg}", flush=True)
    finally:
        d.quit()


if __name__ == "__main__":
    main()
