"""The stdio side of `kimicode acp`: clean frames in, only frames out, and a quick `initialize`.

Editors wait for `initialize` before anything else, and the ACP SDK takes ~0.5 s to import
(its pydantic schema), so the first `initialize` is answered here from the static table in
handshake.py while the SDK loads; every other frame waits in a buffer for the SDK."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
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

    def stop() -> None:
        # SIGTERM / SIGHUP end the server as a closed stdin does: turns are cancelled (their
        # commands, which run in sessions of their own, are killed) and MCP servers stopped.
        pump.cancel()

    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop)
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
        while True:
            try:
                line = await source.readuntil(b"\n")
            except asyncio.IncompleteReadError as end:  # EOF; a last line without its newline
                line = end.partial
            except asyncio.LimitOverrunError as over:  # one line over STDIO_LIMIT: refuse it, keep serving
                await _skip_line(source, over.consumed)
                await _write(writer, {"jsonrpc": "2.0", "id": None,
                                      "error": {"code": -32600, "message": f"frame over {STDIO_LIMIT} bytes"}})
                continue
            if not line:
                break
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
                params = message.get("params")
                if not _plausible_initialize(params):
                    await _write(writer, {"jsonrpc": "2.0", "id": message["id"],
                                          "error": {"code": -32602, "message": "Invalid params"}})
                    continue
                answered_initialize = True
                handshake.update(params)
                await _write(writer, {"jsonrpc": "2.0", "id": message["id"], "result": initialize_result()})
            else:
                for_sdk.feed_data(line if line.endswith(b"\n") else line + b"\n")
    except ConnectionError as exc:  # the client went away
        log.warning("stopped reading the client: %s", exc)
    finally:
        for_sdk.feed_eof()


async def _skip_line(source: asyncio.StreamReader, buffered: int) -> None:
    """Drop a too long line: what is buffered of it, then the rest up to its newline."""
    while True:
        await source.readexactly(buffered)
        try:
            await source.readuntil(b"\n")
            return
        except asyncio.LimitOverrunError as over:
            buffered = over.consumed
        except asyncio.IncompleteReadError:
            return


def _plausible_initialize(params: Any) -> bool:
    """The shape the quick answer relies on (the SDK checks the rest when it handles sessions)."""
    if not isinstance(params, dict) or not isinstance(params.get("protocolVersion"), int):
        return False
    capabilities = params.get("clientCapabilities", {})
    return isinstance(capabilities, dict) and all(
        isinstance(capabilities.get(key, {}), dict) for key in ("fs",)
    ) and isinstance(capabilities.get("terminal", False), bool)


async def _write(writer: asyncio.StreamWriter, frame: dict[str, Any]) -> None:
    writer.write(json.dumps(frame).encode() + b"\n")
    await writer.drain()


class _WriteProtocol(asyncio.streams.FlowControlMixin, asyncio.Protocol):
    """A write pipe with the flow control StreamWriter.drain() relies on."""
