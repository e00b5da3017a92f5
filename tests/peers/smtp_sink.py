"""An SMTP server for the alarm-mail tests: aiosmtpd (an independent SMTP
implementation from PyPI), keeping every message it accepts.

usage: smtp_sink.py PORT OUT_FILE [--starttls CERT KEY | --tls CERT KEY]
                    [--auth USER:PASSWORD]
--starttls: plain, and STARTTLS is required before MAIL; --tls: TLS from
the first byte (smtps); --auth: AUTH (PLAIN or LOGIN, over TLS only) is
required and only this user and password pass.
Prints "READY" once it listens; then on stdin: "stop" (the server goes
away: connections are refused) and "start" (it listens again), each
answered "OK". Each message is appended to OUT_FILE as one JSON line:
{"from", "to", "subject", "body", "at_ms", "tls", "login"}.
"""
import email
import email.policy
import json
import ssl
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port = int(sys.argv[1])
out_path = sys.argv[2]
opts = sys.argv[3:]
kwargs = {}
while opts:
    flag = opts.pop(0)
    if flag in ("--starttls", "--tls"):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(opts.pop(0), opts.pop(0))
        if flag == "--starttls":
            kwargs.update(tls_context=ctx, require_starttls=True)
        else:
            kwargs.update(ssl_context=ctx)
    elif flag == "--auth":
        user, _, password = opts.pop(0).partition(":")

        def check(server, session, envelope, mechanism, data):
            ok = (isinstance(data, LoginPassword) and data.login.decode() == user
                  and data.password.decode() == password)
            return AuthResult(success=ok, auth_data=data if ok else None)

        # aiosmtpd counts only STARTTLS as TLS for AUTH: over smtps (TLS
        # from the first byte) it would never offer AUTH
        kwargs.update(authenticator=check, auth_required=True,
                      auth_require_tls="ssl_context" not in kwargs)
    else:
        sys.exit(f"unknown option {flag}")


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
                "tls": (session.ssl is not None
                        or server.transport.get_extra_info("sslcontext") is not None),
                "login": (session.auth_data.login.decode()
                          if isinstance(session.auth_data, LoginPassword) else None),
            }) + "\n")
        return "250 Message accepted for delivery"


def start():
    c = Controller(Keep(), hostname="127.0.0.1", port=port, **kwargs)
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
