// An independent OPC UA server (node-opcua, a second stack beside asyncua)
// for the agent's OPC UA adapter: nothing here uses our code.
//
// Usage: node node_opcua_server.js PORT PKI_DIR
//   The server makes its own certificate in PKI_DIR the way node-opcua
//   does by default (its subject alternative names put the application URI
//   last, after the DNS names and IP addresses) and keeps it. None and
//   Basic256Sha256 Sign/SignAndEncrypt are offered; client certificates are
//   accepted (what is tested is the agent trusting the server).
//
// Namespace urn:tankwatch:test:site, string node ids:
//   Tank1.Volume      Double, litres, +1.0 every 200 ms
//   Tank1.Temperature Float, 15.5 (never changes)
//   Ctl.PowerLimit    Double, writable, 50.0
// Prints "READY" when listening. Stdin, one command per line, each
// answered "OK": "set NAME VALUE"; "delete NAME"; "create NAME VALUE" (a
// Double variable made again); "quit".
"use strict";
// the protocol with the test is stdout; the libraries' own notices (node-opcua
// prints warnings with console.log) go to stderr
const say = (line) => process.stdout.write(line + "\n");
console.log = (...a) => process.stderr.write(a.join(" ") + "\n");
console.info = console.log;
console.warn = console.log;
const readline = require("readline");
const {
    OPCUAServer,
    OPCUACertificateManager,
    Variant,
    DataType,
    MessageSecurityMode,
    SecurityPolicy,
} = require("node-opcua");

async function main() {
    const [port, pki] = process.argv.slice(2);
    const serverCertificateManager = new OPCUACertificateManager({
        rootFolder: pki,
        automaticallyAcceptUnknownCertificate: true,
    });
    const server = new OPCUAServer({
        port: Number(port),
        resourcePath: "/tw",
        serverCertificateManager,
        securityModes: [MessageSecurityMode.None, MessageSecurityMode.Sign, MessageSecurityMode.SignAndEncrypt],
        securityPolicies: [SecurityPolicy.None, SecurityPolicy.Basic256Sha256],
        allowAnonymous: true,
    });
    await server.initialize();
    const space = server.engine.addressSpace;
    const ns = space.registerNamespace("urn:tankwatch:test:site");
    const site = ns.addObject({ organizedBy: space.rootFolder.objects, browseName: "Site" });
    const vars = {};
    const add = (name, value, dataType, writable) => {
        vars[name] = ns.addVariable({
            componentOf: site,
            browseName: name,
            nodeId: `s=${name}`,
            dataType,
            accessLevel: writable ? "CurrentRead | CurrentWrite" : "CurrentRead",
            userAccessLevel: writable ? "CurrentRead | CurrentWrite" : "CurrentRead",
            value: new Variant({ dataType, value }),
        });
    };
    add("Tank1.Volume", 1000.0, DataType.Double, false);
    add("Tank1.Temperature", 15.5, DataType.Float, false);
    add("Ctl.PowerLimit", 50.0, DataType.Double, true);
    await server.start();
    let volume = 1000.0;
    setInterval(() => {
        volume += 1.0;
        if (vars["Tank1.Volume"]) {
            vars["Tank1.Volume"].setValueFromSource(new Variant({ dataType: DataType.Double, value: volume }));
        }
    }, 200);
    say("READY");
    const rl = readline.createInterface({ input: process.stdin });
    for await (const line of rl) {
        const [cmd, name, value] = line.trim().split(/\s+/);
        if (cmd === "quit" || cmd === undefined) {
            break;
        } else if (cmd === "set") {
            vars[name].setValueFromSource(new Variant({ dataType: DataType.Double, value: Number(value) }));
        } else if (cmd === "delete") {
            space.deleteNode(vars[name]);
            delete vars[name];
        } else if (cmd === "create") {
            add(name, Number(value), DataType.Double, false);
        }
        say("OK");
    }
    await server.shutdown(0);
    process.exit(0);
}

main().catch((e) => {
    console.error(e);
    process.exit(1);
});
