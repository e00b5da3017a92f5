"""Reads a Veeder-Root TLS console with the PyPI veeder-root-tls-socket-library
(an independent implementation: its socket wrapper verifies the checksum,
its tls_3xx functions parse the computer format) and prints what it read as
one JSON object: {"201": ..., "202": ..., "205": ...}.

Usage: vr_crosscheck.py HOST PORT
"""
import json
import sys

from veeder_root_tls_socket_library import tls_3xx
from veeder_root_tls_socket_library.socket import TlsSocket


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    out = {}
    with TlsSocket(host, port) as tls:
        # the library waits `timeout` before each read: short, and few retries
        for code, parse in (("201", tls_3xx.function_201), ("202", tls_3xx.function_202), ("205", tls_3xx.function_205)):
            raw = tls.execute(f"i{code}00", timeout=0.3, retries=10)
            out[code] = parse(raw)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
