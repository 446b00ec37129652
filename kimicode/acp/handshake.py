"""What kimicode answers to `initialize`, as plain JSON: the stdio front door answers it
before the ACP SDK (whose schema import takes ~0.5 s) has loaded."""

from __future__ import annotations

from typing import Any

PROTOCOL_VERSION = 1  # acp.PROTOCOL_VERSION of the SDK we speak (checked by a test)


def initialize_result() -> dict[str, Any]:
    from kimicode import __version__

    return {
        "protocolVersion": PROTOCOL_VERSION,
        "agentCapabilities": {
            "loadSession": True,
            "promptCapabilities": {"image": False, "audio": False, "embeddedContext": True},
            "mcpCapabilities": {"http": True, "sse": False},
            "sessionCapabilities": {"list": {}},
        },
        "authMethods": [],
        "agentInfo": {"name": "kimicode", "title": "kimicode", "version": __version__},
    }
