"""A webhook receiver written from the documented contract only (Python's
own http.server and hmac, nothing of ours): it checks each notification's
X-Tankwatch-Signature, "v1=" + hex HMAC-SHA256(secret, timestamp + "." +
raw body), and that X-Tankwatch-Timestamp is within 300 s of its clock.

usage: webhook_receiver.py SECRET_FILE OUT_FILE PORT
Prints "READY"; then on stdin: "fail N" (answer the next N
notifications 500, as a receiver that is down) -> "OK". Each notification
is appended to OUT_FILE as one JSON line: {"verified", "why", "at_ms",
"body"}.
"""
import hashlib
import hmac
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

secret = open(sys.argv[1], "rb").read().strip()
out_path = sys.argv[2]
lock = threading.Lock()
failing = [0]


def check(headers, raw):
    ts = headers.get("X-Tankwatch-Timestamp")
    sig = headers.get("X-Tankwatch-Signature")
    if ts is None or sig is None:
        return False, "unsigned"
    try:
        t = int(ts)
    except ValueError:
        return False, "timestamp not a number"
    if abs(time.time() - t) > 300:
        return False, "timestamp too far from now"
    want = "v1=" + hmac.new(secret, ts.encode() + b"." + raw, hashlib.sha256).hexdigest()
    ok = any(hmac.compare_digest(want, part.strip()) for part in sig.split(","))
    return ok, "" if ok else "signature mismatch"


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with lock:
            if failing[0] > 0:
                failing[0] -= 1
                self.send_response(500)
                self.end_headers()
                return
            ok, why = check(self.headers, raw)
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
            with open(out_path, "a") as f:
                f.write(json.dumps({"verified": ok, "why": why, "at_ms": int(time.time() * 1000), "body": body}) + "\n")
        self.send_response(204 if ok else 401)
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[3])), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
print("READY", flush=True)
for line in sys.stdin:
    parts = line.split()
    if len(parts) == 2 and parts[0] == "fail":
        with lock:
            failing[0] = int(parts[1])
        print("OK", flush=True)
    else:
        print(f"ERR unknown command {line.strip()!r}", flush=True)
