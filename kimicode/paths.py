"""Where kimicode keeps things; no heavy imports, so the app can use it before the first paint."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def user_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "kimicode" / "config.toml"


def data_dir() -> Path:
    """Sessions, checkpoints and per-project grants: $XDG_DATA_HOME/kimicode."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "kimicode"


def project_grants_path(workspace: Path) -> Path:
    """Where "allow always" answers for `workspace` are kept: outside the repository,
    so neither the repository nor the agent working in it can grant itself anything."""
    digest = hashlib.sha256(str(workspace.resolve()).encode()).hexdigest()[:16]
    return data_dir() / "permissions" / f"{workspace.name}-{digest}.json"


def project_config_path(workspace: Path) -> Path:
    return workspace / ".kimicode" / "config.toml"
