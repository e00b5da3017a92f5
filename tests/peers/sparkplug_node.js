// An independent Sparkplug B edge node in JavaScript: the Eclipse Tahu
// client (npm sparkplug-client 3.2.4, its own MQTT.js and protobuf
// encoder), beside the Python one of mqtt_site.py. Nothing here uses our code.
//
// Usage: node sparkplug_node.js HOST PORT GROUP EDGE DEVICE
//   On connect it publishes NBIRTH and a DBIRTH of DEVICE with the metric
//   Volume (Double, 5000.0). Prints "READY" once born.
// Stdin, each answered "OK": "ddata NAME VALUE" (a DDATA of DEVICE with one
// Double metric); "skip N" (the next N seq numbers are never sent: a gap);
// "quit".
"use strict";
// the protocol with the test is stdout; the libraries' own notices (node-opcua
// prints warnings with console.log) go to stderr
const say = (line) => process.stdout.write(line + "\n");
console.log = (...a) => process.stderr.write(a.join(" ") + "\n");
console.info = console.log;
console.warn = console.log;
const readline = require("readline");
const sparkplug = require("sparkplug-client");

const [host, port, group, edge, device] = process.argv.slice(2);
const client = sparkplug.newClient({
    serverUrl: `tcp://${host}:${port}`,
    username: "",
    password: "",
    groupId: group,
    edgeNode: edge,
    clientId: `tahu-${group}-${edge}`,
    version: "spBv1.0",
    publishDeath: true,
});
const metric = (name, value) => ({ name, value, type: "Double", timestamp: Date.now() });
let ready = false;
const birth = () => {
    client.publishNodeBirth({ timestamp: Date.now(), metrics: [metric("Node Uptime", 0)] });
    client.publishDeviceBirth(device, { timestamp: Date.now(), metrics: [metric("Volume", 5000.0)] });
    if (!ready) {
        ready = true;
        say("READY");
    }
};
client.on("birth", birth);
// a rebirth request from a host application
client.on("ncmd", (payload) => {
    if ((payload.metrics || []).some((m) => m.name === "Node Control/Rebirth" && m.value)) {
        birth();
    }
});
const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
    const [cmd, a, b] = line.trim().split(/\s+/);
    if (cmd === "quit") {
        client.stop();
        process.exit(0);
    } else if (cmd === "ddata") {
        client.publishDeviceData(device, { timestamp: Date.now(), metrics: [metric(a, Number(b))] });
    } else if (cmd === "skip") {
        for (let i = 0; i < Number(a); i++) {
            client.incrementSeqNum();
        }
    }
    say("OK");
});
