"""An independent MQTT site (paho-mqtt) publishing to the machine's broker,
so the agent's MQTT adapter is checked against someone else's client and
someone else's Sparkplug B encoding (the Eclipse Tahu schema as compiled in
pysparkplug). Nothing here uses our code.

Usage: mqtt_site.py HOST PORT PREFIX
Prints "READY" once connected; then reads commands from stdin, one a line:

  json V             publish {"level": {"volume": V}, "ts": <now ms>} to PREFIX/tank1/state
  plain V            publish V (text) to PREFIX/tank1/temp
  raw TOPIC TEXT     publish TEXT to PREFIX/TOPIC as is (garbage tests)
  birth              NBIRTH (seq 0) + DBIRTH for device "atg" (Volume alias 1, Setpoint alias 2)
  ddata V            DDATA Volume=V by alias, next seq
  skip N             advance the seq by N without publishing (a seq gap)
  alias A V          DDATA with an alias never born (A), next seq
  garbage            DDATA whose payload is not protobuf
  quit

Behaviour of a device:
  - PREFIX/ctl/setpoint/set (plain number) is applied and echoed on PREFIX/ctl/setpoint.
  - NCMD "Node Control/Rebirth" republishes NBIRTH + DBIRTH (seq restarts at 0),
    and prints "REBIRTH" on stdout.
  - DCMD "Setpoint" is applied and published as DDATA.
Sparkplug group "G1", edge node "N1", device "atg".
"""
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt
from pysparkplug._protobuf import sparkplug_b_pb2 as pb

GROUP, NODE, DEVICE = "G1", "N1", "atg"
DOUBLE, FLOAT, UINT64, BOOLEAN = 10, 9, 8, 11

state = {"seq": 0, "bd": 0, "volume": 1000.0, "setpoint": 10.0}
lock = threading.Lock()
# stdout is written by two threads (paho's loop: REBIRTH; the main one: OK):
# one line at a time, whole, or "OK" and "REBIRTH" run together
out_lock = threading.Lock()


def say(line):
    with out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def now_ms():
    return int(time.time() * 1000)


def next_seq():
    s = state["seq"]
    state["seq"] = (s + 1) % 256
    return s


def topic(kind, device=None):
    t = f"spBv1.0/{GROUP}/{kind}/{NODE}"
    return f"{t}/{device}" if device else t


def payload(seq, metrics):
    p = pb.Payload()
    p.timestamp = now_ms()
    if seq is not None:
        p.seq = seq
    for name, alias, dt, value in metrics:
        m = p.metrics.add()
        if name is not None:
            m.name = name
        if alias is not None:
            m.alias = alias
        m.datatype = dt
        m.timestamp = now_ms()
        if dt == DOUBLE:
            m.double_value = value
        elif dt == FLOAT:
            m.float_value = value
        elif dt == UINT64:
            m.long_value = value
        elif dt == BOOLEAN:
            m.boolean_value = value
    return p.SerializeToString()


def births(c):
    with lock:
        state["seq"] = 0
        state["bd"] += 1
        c.publish(topic("NBIRTH"), payload(next_seq(), [("bdSeq", None, UINT64, state["bd"]),
                                                        ("Node Control/Rebirth", None, BOOLEAN, False)]), qos=0)
        c.publish(topic("DBIRTH", DEVICE), payload(next_seq(), [
            ("Volume", 1, DOUBLE, state["volume"]),
            ("Setpoint", 2, FLOAT, state["setpoint"]),
        ]), qos=0)


def on_message(c, _userdata, msg):
    if msg.topic.endswith("/ctl/setpoint/set"):
        v = float(msg.payload.decode().strip())
        c.publish(msg.topic[: -len("/set")], f"{v}", qos=1)
        return
    p = pb.Payload()
    p.ParseFromString(msg.payload)
    if msg.topic == topic("NCMD"):
        for m in p.metrics:
            if m.name == "Node Control/Rebirth" and m.boolean_value:
                births(c)
                say("REBIRTH")
    elif msg.topic == topic("DCMD", DEVICE):
        for m in p.metrics:
            if m.name == "Setpoint":
                with lock:
                    state["setpoint"] = m.float_value
                    c.publish(topic("DDATA", DEVICE), payload(next_seq(), [(None, 2, FLOAT, state["setpoint"])]), qos=0)


def main():
    host, port, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    c = mqtt.Client(client_id=f"peer-{prefix}-{now_ms()}", clean_session=True)
    c.on_message = on_message
    # the edge node's death certificate, as Sparkplug requires
    c.will_set(topic("NDEATH"), payload(None, [("bdSeq", None, UINT64, 1)]), qos=0)
    c.connect(host, port, keepalive=30)
    c.subscribe([(f"{prefix}/ctl/setpoint/set", 1), (topic("NCMD"), 0), (topic("DCMD", DEVICE), 0)])
    c.loop_start()
    time.sleep(0.3)
    say("READY")
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "json":
            body = {"level": {"volume": float(cmd[1])}, "ts": now_ms()}
            c.publish(f"{prefix}/tank1/state", json.dumps(body), qos=1)
        elif cmd[0] == "plain":
            c.publish(f"{prefix}/tank1/temp", cmd[1], qos=1)
        elif cmd[0] == "raw":
            c.publish(f"{prefix}/{cmd[1]}", " ".join(cmd[2:]), qos=1)
        elif cmd[0] == "birth":
            births(c)
        elif cmd[0] == "ddata":
            with lock:
                state["volume"] = float(cmd[1])
                c.publish(topic("DDATA", DEVICE), payload(next_seq(), [(None, 1, DOUBLE, state["volume"])]), qos=0)
        elif cmd[0] == "skip":
            with lock:
                state["seq"] = (state["seq"] + int(cmd[1])) % 256
        elif cmd[0] == "alias":
            with lock:
                c.publish(topic("DDATA", DEVICE), payload(next_seq(), [(None, int(cmd[1]), DOUBLE, float(cmd[2]))]), qos=0)
        elif cmd[0] == "garbage":
            with lock:
                next_seq()
                c.publish(topic("DDATA", DEVICE), b"\xff\x01garbage", qos=0)
        elif cmd[0] == "quit":
            break
        say("OK")
    c.loop_stop()
    c.disconnect()


if __name__ == "__main__":
    main()
