"""The stdio side of `kimicode acp`: clean frames in, only frames out, and a quick `initialize`.

Editors wait for `initialize` before anything else, and the ACP SDK takes ~0.5 s to import
(its pydantic schema), so the first `initialize` is answered here from the static table in
handshake.py while the SDK loads; every other frame waits in a buffer for the SDK."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from typing import Any

from kimicode.acp.handshake import initialize_result

log = logging.getLogger(__name__)

STDIO_LIMIT = 50 * 1024 * 1024  # bytes in one JSON-RPC line (embedded files can be large)


async def serve(flags: dict[str, Any]) -> None:
    """Speak ACP on stdin/stdout until the client closes stdin. fd 1 is pointed at stderr,
    so a stray print or a child process cannot corrupt the frames."""
    loop = asyncio.get_running_loop()
    protocol_out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    reader = asyncio.StreamReader(limit=STDIO_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, protocol = await loop.connect_write_pipe(_WriteProtocol, protocol_out)
    writer = asyncio.StreamWriter(transport, protocol, None, loop)

    for_sdk = asyncio.StreamReader(limit=STDIO_LIMIT)
    handshake: dict[str, Any] = {}  # the params of the `initialize` answered here
    pump = asyncio.create_task(_check_frames(reader, for_sdk, writer, handshake))
    server = await asyncio.to_thread(_load_server)  # the SDK import, off the loop that answers initialize
    agent = server.KimicodeAcpAgent(flags, handshake)
    try:
        import acp

        await acp.run_agent(agent, input_stream=writer, output_stream=for_sdk)
    finally:
        pump.cancel()
        await agent.close()


def _load_server() -> Any:
    from kimicode.acp import server

    return server


async def _check_frames(source: asyncio.StreamReader, for_sdk: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        handshake: dict[str, Any]) -> None:
    """Pass well-formed JSON-RPC lines to the SDK, answer the first `initialize` at once, and
    answer malformed lines with a JSON-RPC error (the SDK would only log them, and a bare
    number or list would stop its reader)."""
    answered_initialize = False
    try:
        while line := await source.readline():
            if not line.strip():
                continue
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            if not (isinstance(message, dict) and message.get("jsonrpc") == "2.0"):
                code, text = (-32700, "Parse error") if message is None else (-32600, "Invalid Request")
                request_id = message.get("id") if isinstance(message, dict) else None
                await _write(writer, {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": text}})
            elif message.get("method") == "initialize" and "id" in message and not answered_initialize:
                answered_initialize = True
                params = message.get("params")
                handshake.update(params if isinstance(params, dict) else {})
                await _write(writer, {"jsonrpc": "2.0", "id": message["id"], "result": initialize_result()})
            else:
                for_sdk.feed_data(line if line.endswith(b"\n") else line + b"\n")
    except (ValueError, ConnectionError) as exc:  # a line over the limit, or the client went away
        log.warning("stopped reading the client: %s", exc)
    finally:
        for_sdk.feed_eof()


async def _write(writer: asyncio.StreamWriter, frame: dict[str, Any]) -> None:
    writer.write(json.dumps(frame).encode() + b"\n")
    await writer.drain()


class _WriteProtocol(asyncio.streams.FlowControlMixin, asyncio.Protocol):
    """A write pipe with the flow control StreamWriter.drain() relies on."""
