"""An independent Modbus TCP server (pymodbus) whose register map has holes:
a request that spans an unmapped register is answered with exception 2
(illegal data address), as real gauges and PLCs do, although each mapped
register reads fine on its own.

Usage: modbus_sparse_server.py PORT   (prints "READY <port>" when listening)

Map (zero-based request addresses), holding registers only:
  0-1   float32  1500.25  ABCD
  2     uint16   7
  (3, 4 unmapped)
  5     uint16   42
  (6-9 unmapped)
  10-11 float32  -12.5    ABCD
"""
import struct
import sys

from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusSlaveContext
from peer_common import serve


def words(fmt, value):
    raw = struct.pack(">" + fmt, value)
    return [struct.unpack(">H", raw[i:i + 2])[0] for i in range(0, len(raw), 2)]


class SparseContext(ModbusSlaveContext):
    """Answers exception 2 for a holding-register read that touches an
    unmapped address (pymodbus 3.9's own sparse block raises instead)."""

    def __init__(self, mapped, **kw):
        super().__init__(**kw)
        self.mapped = mapped

    async def async_getValues(self, fc_as_hex, address, count=1):
        if fc_as_hex == 3 and any(a not in self.mapped for a in range(address, address + count)):
            return 2  # ExceptionResponse.ILLEGAL_ADDRESS
        return await super().async_getValues(fc_as_hex, address, count)


def main():
    port = int(sys.argv[1])
    f1 = words("f", 1500.25)
    f2 = words("f", -12.5)
    mapped = {0: f1[0], 1: f1[1], 2: 7, 5: 42, 10: f2[0], 11: f2[1]}
    hr = [mapped.get(a, 0) for a in range(12)]
    # pymodbus adds 1 to every request address, so blocks start at 1
    store = SparseContext(
        set(mapped),
        di=ModbusSequentialDataBlock(1, [0] * 8),
        co=ModbusSequentialDataBlock(1, [0] * 8),
        hr=ModbusSequentialDataBlock(1, hr),
        ir=ModbusSequentialDataBlock(1, [0] * 8),
    )
    context = ModbusServerContext(slaves=store, single=True)

    serve(context, port)


if __name__ == "__main__":
    main()
