"""An SMTP server for the alarm-mail tests: aiosmtpd (an independent SMTP
implementation from PyPI), keeping every message it accepts.

usage: smtp_sink.py PORT OUT_FILE
Prints "READY" once it listens; then on stdin: "stop" (the server goes
away: connections are refused) and "start" (it listens again), each
answered "OK". Each message is appended to OUT_FILE as one JSON line:
{"from", "to", "subject", "body", "at_ms"}.
"""
import email
import email.policy
import json
import sys
import time

from aiosmtpd.controller import Controller

port = int(sys.argv[1])
out_path = sys.argv[2]


class Keep:
    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",))
        with open(out_path, "a") as f:
            f.write(json.dumps({
                "from": envelope.mail_from,
                "to": list(envelope.rcpt_tos),
                "subject": str(msg["subject"]),
                "body": body.get_content() if body is not None else "",
                "at_ms": int(time.time() * 1000),
            }) + "\n")
        return "250 Message accepted for delivery"


def start():
    c = Controller(Keep(), hostname="127.0.0.1", port=port)
    c.start()
    return c


controller = start()
print("READY", flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "stop":
        if controller is not None:
            controller.stop()
            controller = None
        print("OK", flush=True)
    elif cmd == "start":
        if controller is None:
            controller = start()
        print("OK", flush=True)
    else:
        print(f"ERR unknown command {cmd!r}", flush=True)
