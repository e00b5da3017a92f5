"""An independent OPC UA server (asyncua, FreeOpcUa) for the agent's OPC UA
adapter: nothing here uses our code.

Usage: opcua_server.py PORT PKI_DIR SECURITY [--shift] [--items N]
  SECURITY  none | sign_and_encrypt (Basic256Sha256, Sign and SignAndEncrypt
            offered; None is then not offered). The server's certificate and
            key are created in PKI_DIR (server_cert.der, server_key.pem) if
            missing and kept, so a restart presents the same certificate.
  --shift   register another namespace first: our namespace gets index 3
            instead of 2, as after a server reconfiguration (a client that
            stored "ns=2;..." is now wrong; one that stored the namespace URI
            is not).
  --user NAME:PASSWORD  only this user may log in (a user name token;
            anonymous sessions are refused).
  --refuse-subscriptions  answer every CreateSubscription with
            BadTooManySubscriptions (a server out of subscriptions); the
            number of sessions opened is printed on "sessions".
  --items N also serve N variables Bench.0 .. Bench.N-1 (Double), each
            changing once a second (benchmarks).

Namespace urn:tankwatch:test:site, string node ids:
  Tank1.Volume      Double, litres, +1.0 every 200 ms
  Tank1.Temperature Float, 15.5
  Ctl.PowerLimit    Double, writable (a setpoint), 50.0
  Ctl.Broken        Double, status BadSensorFailure
Prints "READY" when listening. Stdin: "set NAME VALUE"; "count" (answers
"OK <n>": Bench values written so far); "delete NAME" (the variable is
deleted); "create NAME VALUE" (a Double variable NAME made again); "quit".
"""
import asyncio
import sys
from pathlib import Path

from asyncua import Server, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.permission_rules import User, UserRole
from cryptography.x509.oid import ExtendedKeyUsageOID

URI = "urn:tankwatch:test:site"
APP_URI = "urn:tankwatch:test:server"


class OneUser:
    """Accepts exactly one user name and password."""

    def __init__(self, name, password):
        self.name, self.password = name, password

    def get_user(self, iserver, username=None, password=None, certificate=None):
        if username == self.name and password == self.password:
            return User(role=UserRole.User)
        return None


async def main():
    port, pki, security = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    shift = "--shift" in sys.argv
    items = int(sys.argv[sys.argv.index("--items") + 1]) if "--items" in sys.argv else 0
    user = sys.argv[sys.argv.index("--user") + 1].split(":", 1) if "--user" in sys.argv else None
    server = Server(user_manager=OneUser(*user)) if user else Server()
    await server.init()
    sessions = [0]
    if "--refuse-subscriptions" in sys.argv:
        async def refuse(*args, **kwargs):
            raise ua.UaStatusCodeError(ua.StatusCodes.BadTooManySubscriptions)
        server.iserver.subscription_service.create_subscription = refuse
    original_create_session = server.iserver.create_session

    def counting_create_session(*args, **kwargs):
        sessions[0] += 1
        return original_create_session(*args, **kwargs)
    server.iserver.create_session = counting_create_session
    if user:
        server.set_identity_tokens([ua.UserNameIdentityToken])
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/tw/")
    server.set_server_name("tankwatch test server")
    await server.set_application_uri(APP_URI)
    if security == "none":
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    else:
        pki.mkdir(parents=True, exist_ok=True)
        cert, key = pki / "server_cert.der", pki / "server_key.pem"
        await setup_self_signed_certificate(
            key, cert, APP_URI, "127.0.0.1", [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            {"countryName": "CH", "organizationName": "tankwatch tests", "commonName": "tankwatch test server"},
        )
        await server.load_certificate(str(cert))
        await server.load_private_key(str(key))
        server.set_security_policy([
            ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
            ua.SecurityPolicyType.Basic256Sha256_Sign,
        ])
    if shift:
        await server.register_namespace("urn:tankwatch:test:other")
    idx = await server.register_namespace(URI)
    objs = server.nodes.objects
    site = await objs.add_object(ua.NodeId("Site", idx), "Site")

    async def var(name, value, vtype, writable=False):
        v = await site.add_variable(ua.NodeId(name, idx), name, ua.Variant(value, vtype))
        if writable:
            await v.set_writable()
        return v

    volume = await var("Tank1.Volume", 1000.0, ua.VariantType.Double)
    temperature = await var("Tank1.Temperature", 15.5, ua.VariantType.Float)
    power = await var("Ctl.PowerLimit", 50.0, ua.VariantType.Double, writable=True)
    broken = await var("Ctl.Broken", 0.0, ua.VariantType.Double)
    bench = [await var(f"Bench.{i}", 0.0, ua.VariantType.Double) for i in range(items)]
    nodes = {"Tank1.Volume": volume, "Ctl.PowerLimit": power,
             "Tank1.Temperature": temperature}

    async with server:
        await broken.write_value(ua.DataValue(ua.Variant(0.0, ua.VariantType.Double),
                                              StatusCode=ua.StatusCode(ua.StatusCodes.BadSensorFailure)))
        print("READY", flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

        written = [0]

        async def tick():
            n = 0
            while True:
                await asyncio.sleep(0.1)
                n += 1
                if n % 2 == 0:
                    await volume.write_value(1000.0 + n / 2)
                if n % 10 == 0:
                    for i, b in enumerate(bench):
                        await b.write_value(float(n * 1000 + i))
                        written[0] += 1

        t = asyncio.create_task(tick())
        while True:
            line = (await reader.readline()).decode().split()
            if not line or line[0] == "quit":
                break
            if line[0] == "set":
                await nodes[line[1]].write_value(float(line[2]))
            if line[0] == "delete":
                await server.delete_nodes([nodes.pop(line[1])])
            if line[0] == "create":
                nodes[line[1]] = await var(line[1], float(line[2]), ua.VariantType.Double)
            if line[0] == "count":
                print(f"OK {written[0]}", flush=True)
                continue
            if line[0] == "sessions":
                print(f"OK {sessions[0]}", flush=True)
                continue
            print("OK", flush=True)
        t.cancel()


if __name__ == "__main__":
    asyncio.run(main())
