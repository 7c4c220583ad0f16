"""A TCP proxy for the WebSocket conformance run.

Autobahn's cases expect nothing from the server before their own
exchanges, but every Comet WebSocket opens with a heartbeat object (the
contract's "heartbeat first"). The proxy passes everything through except
that one frame, which it checks and drops.

Usage: python3 drop_opening.py LISTEN_PORT SERVER_PORT
"""

import asyncio
import sys

HEARTBEAT = b'\x81\x12{"heartbeat":true}'


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def relay(client_reader, client_writer, server_port):
    server_reader, server_writer = await asyncio.open_connection("127.0.0.1", server_port)
    request = await client_reader.readuntil(b"\r\n\r\n")
    server_writer.write(request)
    await server_writer.drain()
    answer = await server_reader.readuntil(b"\r\n\r\n")
    client_writer.write(answer)
    await client_writer.drain()
    if answer.startswith(b"HTTP/1.1 101 "):
        opening = await server_reader.readexactly(len(HEARTBEAT))
        if opening != HEARTBEAT:
            raise SystemExit(f"the WebSocket did not open with a heartbeat: {opening!r}")
    await asyncio.gather(
        pipe(client_reader, server_writer), pipe(server_reader, client_writer)
    )


async def main():
    listen, server_port = int(sys.argv[1]), int(sys.argv[2])
    server = await asyncio.start_server(
        lambda r, w: relay(r, w, server_port), "127.0.0.1", listen
    )
    async with server:
        await server.serve_forever()


asyncio.run(main())
