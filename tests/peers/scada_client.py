"""An independent OPC UA client (asyncua, FreeOpcUa) acting as a SCADA
client of the agent's OPC UA server: nothing here uses our code.

Usage: scada_client.py PKI_DIR
  The client's certificate and key are created in PKI_DIR
  (client_cert.der, client_key.pem) if missing and kept; the test puts the
  certificate in the agent's trusted/ folder (or not). Prints "READY".

Commands (one per line; each answered "OK [result]" or "ERR <message>"):
  connect URL SECURITY USER PASSWORD
        SECURITY: sign_and_encrypt | sign (Basic256Sha256) | none.
        USER "-" connects anonymously.
  browse            every variable under Objects/Site: JSON [path, ...]
  read NODEID       JSON {"value", "status", "source_ms"}
  subscribe NODEID  subscribe (publishing 100 ms, sampling 0 = on change)
  subscribe_many NODEID,NODEID,...   one monitored item each
  notes             JSON of the notifications since the last call:
                    [{"node", "value", "status", "source_ms", "recv_ms"}]
  write NODEID VALUE   writes a Double; answers the status name
  props NODEID      JSON {"eu": display name or null, "range": [lo, hi] or null}
  nsidx URI         the namespace index of URI
  discovery URL     JSON: the DiscoveryUrls the server's endpoints give
  app_uri URI       the ApplicationUri the next connects claim (default: the
                    one in the client's certificate)
  disconnect
  create_sessions URL N [activate]
        opens N channels with security None and creates a session on each,
        never activating it unless "activate" (anonymous) is given; held
        until hold_close; answers how many sessions were created
  hold_close        closes what create_sessions holds
  logins URL N CONC SECURITY USER PASSWORD
        N full logins (connect, activate, disconnect), CONC at once;
        answers JSON {"ok": k, "failed": ["error", ...]}
"""
import asyncio
import json
import sys
import time
from pathlib import Path

from asyncua import Client, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography.x509.oid import ExtendedKeyUsageOID

APP_URI = "urn:tankwatch:test:scada-client"


def ms(dt):
    return int(dt.timestamp() * 1000) if dt else None


class Notes:
    def __init__(self):
        self.items = []

    def datachange_notification(self, node, val, data):
        dv = data.monitored_item.Value
        self.items.append({
            "node": node.nodeid.to_string(),
            "value": val,
            "status": dv.StatusCode.name,
            "source_ms": ms(dv.SourceTimestamp),
            "recv_ms": int(time.time() * 1000),
        })


async def main():
    pki = Path(sys.argv[1])
    pki.mkdir(parents=True, exist_ok=True)
    cert, key = pki / "client_cert.der", pki / "client_key.pem"
    await setup_self_signed_certificate(
        key, cert, APP_URI, "localhost", [ExtendedKeyUsageOID.CLIENT_AUTH],
        {"countryName": "CH", "organizationName": "tankwatch tests", "commonName": "scada client"},
    )
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    client = None
    notes = Notes()
    sub = None
    held = []
    claimed = [APP_URI]

    async def one_login(url, security, user, password):
        c = Client(url, timeout=30)
        c.application_uri = APP_URI
        if security != "none":
            mode = ua.MessageSecurityMode.SignAndEncrypt if security == "sign_and_encrypt" else ua.MessageSecurityMode.Sign
            await c.set_security(SecurityPolicyBasic256Sha256, str(cert), str(key), mode=mode)
        if user != "-":
            c.set_user(user)
            c.set_password(password)
        await c.connect()
        await c.disconnect()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        parts = line.split()
        if not parts:
            continue
        cmd, args = parts[0], parts[1:]
        try:
            if cmd == "connect":
                url, security, user, password = args
                client = Client(url, timeout=10)
                client.application_uri = claimed[0]
                if security != "none":
                    mode = ua.MessageSecurityMode.SignAndEncrypt if security == "sign_and_encrypt" else ua.MessageSecurityMode.Sign
                    await client.set_security(SecurityPolicyBasic256Sha256, str(cert), str(key), mode=mode)
                if user != "-":
                    client.set_user(user)
                    client.set_password(password)
                await client.connect()
                print("OK", flush=True)
            elif cmd == "browse":
                found = []
                objects = client.nodes.objects

                async def walk(node, path):
                    for ch in await node.get_children(refs=ua.ObjectIds.HierarchicalReferences):
                        name = (await ch.read_browse_name()).Name
                        cls = await ch.read_node_class()
                        p = f"{path}/{name}"
                        if cls == ua.NodeClass.Variable:
                            found.append(p)
                        elif cls == ua.NodeClass.Object:
                            await walk(ch, p)

                for ch in await objects.get_children():
                    if (await ch.read_browse_name()).Name == "Site":
                        await walk(ch, "Site")
                print("OK " + json.dumps(sorted(found)), flush=True)
            elif cmd == "read":
                dv = await client.get_node(args[0]).read_data_value(raise_on_bad_status=False)
                v = dv.Value.Value if dv.Value is not None else None
                if hasattr(v, "isoformat"):
                    v = v.isoformat()
                print("OK " + json.dumps({"value": v, "status": dv.StatusCode.name, "source_ms": ms(dv.SourceTimestamp)}), flush=True)
            elif cmd == "subscribe":
                if sub is None:
                    sub = await client.create_subscription(100, notes)
                await sub.subscribe_data_change(client.get_node(args[0]), queuesize=100, sampling_interval=0)
                print("OK", flush=True)
            elif cmd == "subscribe_many":
                # NODEID,NODEID,...  (publishing 100 ms, sampling 0 = as fast as the server samples)
                if sub is None:
                    sub = await client.create_subscription(100, notes)
                nodes = [client.get_node(n) for n in args[0].split(",")]
                await sub.subscribe_data_change(nodes, queuesize=10, sampling_interval=0)
                print("OK", flush=True)
            elif cmd == "notes":
                items, notes.items = notes.items, []
                print("OK " + json.dumps(items), flush=True)
            elif cmd == "write":
                node = client.get_node(args[0])
                try:
                    await node.write_value(ua.DataValue(ua.Variant(float(args[1]), ua.VariantType.Double)))
                    print("OK Good", flush=True)
                except ua.UaStatusCodeError as e:
                    print("OK " + ua.StatusCode(e.code).name, flush=True)
            elif cmd == "props":
                node = client.get_node(args[0])
                eu = rng = None
                for p in await node.get_properties():
                    name = (await p.read_browse_name()).Name
                    if name == "EngineeringUnits":
                        eu = (await p.read_value()).DisplayName.Text
                    elif name == "EURange":
                        r = await p.read_value()
                        rng = [r.Low, r.High]
                print("OK " + json.dumps({"eu": eu, "range": rng}), flush=True)
            elif cmd == "discovery":
                eps = await Client(args[0], timeout=10).connect_and_get_server_endpoints()
                urls = sorted({u for e in eps for u in (e.Server.DiscoveryUrls or [])})
                print("OK " + json.dumps(urls), flush=True)
            elif cmd == "app_uri":
                claimed[0] = args[0]
                print("OK", flush=True)
            elif cmd == "nsidx":
                print(f"OK {await client.get_namespace_index(args[0])}", flush=True)
            elif cmd == "create_sessions":
                url, n = args[0], int(args[1])
                made = 0
                for _ in range(n):
                    c = Client(url, timeout=10)
                    await c.connect_socket()
                    await c.send_hello()
                    await c.open_secure_channel()
                    held.append(c)
                    await c.create_session()
                    if args[2:] == ["activate"]:
                        await c.activate_session()
                    made += 1
                print(f"OK {made}", flush=True)
            elif cmd == "hold_close":
                for c in held:
                    try:
                        c.disconnect_socket()
                    except Exception:
                        pass
                held = []
                print("OK", flush=True)
            elif cmd == "logins":
                url, n, conc, security, user, password = args[0], int(args[1]), int(args[2]), args[3], args[4], args[5]
                ok, failed = 0, []
                gate = asyncio.Semaphore(conc)

                async def guarded():
                    nonlocal ok
                    async with gate:
                        try:
                            await one_login(url, security, user, password)
                            ok += 1
                        except Exception as e:
                            failed.append(" ".join(f"{type(e).__name__}: {e}".split()))

                await asyncio.gather(*(guarded() for _ in range(n)))
                print("OK " + json.dumps({"ok": ok, "failed": failed}), flush=True)
            elif cmd == "disconnect":
                if client is not None:
                    await client.disconnect()
                client, sub = None, None
                print("OK", flush=True)
            else:
                print(f"ERR unknown command {cmd}", flush=True)
        except Exception as e:  # the test reads the refusal
            msg = " ".join(f"{type(e).__name__}: {e}".split())
            print(f"ERR {msg}", flush=True)
            if cmd == "connect":
                client = None


if __name__ == "__main__":
    asyncio.run(main())
