"""What every pymodbus peer shares: start the server on loopback and say
READY on stdout once it listens (the Rust side waits for that line)."""
import asyncio

from pymodbus.server import StartAsyncTcpServer


def serve(context, port):
    async def run():
        server = StartAsyncTcpServer(context=context, address=("127.0.0.1", port))
        task = asyncio.ensure_future(server)
        await asyncio.sleep(0.5)
        print(f"READY {port}", flush=True)
        await task

    asyncio.run(run())
