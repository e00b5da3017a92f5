"""An independent Modbus TCP server (pymodbus) serving known values in both
word orders, so the agent's Modbus adapter is checked against someone
else's implementation. Encoding uses Python's struct module, not our code.

Usage: modbus_float_server.py PORT   (prints "READY <port>" when listening)

Map (zero-based request addresses):
  holding 0-1   float32  123.456       ABCD (big word order)
  holding 2-3   float32  123.456       CDAB (little word order)
  holding 4-5   float32  -98765.4321   ABCD
  holding 6-7   float32  -98765.4321   CDAB
  holding 20-21 uint32   305419896     ABCD
  holding 22-23 uint32   305419896     CDAB
  holding 30    int16    -1234
  input   10-11 float32  2500.5        ABCD
  coils   0-7   1 0 1 1 0 0 0 1          (coil 6 is written by the test)
  discrete inputs 0-7  0 1 1 0 1 0 0 0
"""
import struct
import sys

from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusSlaveContext
from peer_common import serve


def words(fmt, value, little_word_order=False):
    raw = struct.pack(">" + fmt, value)
    w = [struct.unpack(">H", raw[i:i + 2])[0] for i in range(0, len(raw), 2)]
    return list(reversed(w)) if little_word_order else w


def main():
    port = int(sys.argv[1])
    hr = [0] * 40
    hr[0:2] = words("f", 123.456)
    hr[2:4] = words("f", 123.456, True)
    hr[4:6] = words("f", -98765.4321)
    hr[6:8] = words("f", -98765.4321, True)
    hr[20:22] = words("I", 305419896)
    hr[22:24] = words("I", 305419896, True)
    hr[30] = words("h", -1234)[0]
    ir = [0] * 20
    ir[10:12] = words("f", 2500.5)
    # pymodbus adds 1 to every request address, so blocks start at 1.
    # pymodbus 3.9.2 ignores hr/ir/co unless di is also given: pass all four.
    store = ModbusSlaveContext(
        di=ModbusSequentialDataBlock(1, [0, 1, 1, 0, 1, 0, 0, 0]),
        co=ModbusSequentialDataBlock(1, [1, 0, 1, 1, 0, 0, 0, 1]),
        hr=ModbusSequentialDataBlock(1, hr),
        ir=ModbusSequentialDataBlock(1, ir),
    )
    context = ModbusServerContext(slaves=store, single=True)

    serve(context, port)


if __name__ == "__main__":
    main()
