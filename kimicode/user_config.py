"""Write the first-run backend choice into the user's config file.

The file is edited with tomlkit so the user's comments, tables and other keys
survive; it is replaced atomically and kept private (0600) since it may hold a key.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import tomlkit
from pydantic import ValidationError
from tomlkit.exceptions import TOMLKitError

# The same merge load_settings does, so the check below sees what it will see.
from kimicode.config import ConfigError, Settings, deep_merge, read_defaults, resolve_endpoint, user_config_path

# The top-level keys that together say which backend is used; any of them left over
# from an earlier choice could contradict the new one (an old base_url, say).
BACKEND_KEYS = ("provider", "base_url", "api_key", "model", "model_path")

_NEW_FILE_HEADER = "# kimicode user configuration, started by the first-run setup; edit freely.\n"


def save_backend_choice(
    provider: str,
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    model: str | None = None,
    model_path: str | None = None,
    path: Path | None = None,
) -> Path:
    """Record `provider` (and what it needs) in the user config; return the file written.

    Raises ConfigError, with a message fit to show the user, for a bad input or an
    existing file that is not valid TOML (which is then left untouched)."""
    path = path or user_config_path()
    text, current = _read_existing(path)
    layered = deep_merge(read_defaults(), current)
    chosen = _backend_keys(
        provider.strip(),
        layered,
        api_key=api_key,
        base_url=base_url,
        model=model,
        model_path=model_path,
    )

    document = tomlkit.parse(text) if text.strip() else tomlkit.parse(_NEW_FILE_HEADER)
    for key in BACKEND_KEYS:
        if key in chosen:
            document[key] = chosen[key]
        elif key in document:
            del document[key]
    new_text = tomlkit.dumps(document)

    _check_loads(path, new_text)
    _write_private(path, new_text)
    return path


def _read_existing(path: Path) -> tuple[str, dict[str, Any]]:
    """The file's text and data; ("", {}) when there is none yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return "", {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc}); fix or remove it, then run setup again") from None
    try:
        data = tomllib.loads(text)
        tomlkit.parse(text)  # the editor must accept it too, or we could not keep it intact
    except (tomllib.TOMLDecodeError, TOMLKitError) as exc:
        raise ConfigError(
            f"{path} is not valid TOML ({exc}); it was left unchanged. "
            "Fix or remove that file, then run setup again."
        ) from None
    return text, data


def _backend_keys(
    provider: str,
    layered: dict[str, Any],
    *,
    api_key: str | None,
    base_url: str | None,
    model: str | None,
    model_path: str | None,
) -> dict[str, str]:
    """The backend keys to write for this choice, validated; every other backend key goes."""
    providers: dict[str, Any] = layered.get("providers") or {}
    api_key = _clean_key(api_key)
    model = (model or "").strip() or None
    chosen: dict[str, str] = {"provider": provider}

    if provider == "local":
        if base_url or api_key:
            raise ConfigError("the local engine takes a checkpoint folder, not a URL or API key")
        chosen["model_path"] = _checkpoint_folder(model_path)
    else:
        if model_path:
            raise ConfigError("a checkpoint folder (model_path) is only used with the local engine")
        # Checked in the order the setup screen shows the fields: URL, key, model.
        if provider == "custom":
            if not (base_url or "").strip():
                raise ConfigError("a custom server needs its URL, e.g. http://localhost:8000/v1")
        elif provider not in providers:
            known = ", ".join(sorted([*providers, "custom", "local"]))
            raise ConfigError(f"unknown provider {provider!r}; choose one of: {known}")
        if base_url is not None:
            chosen["base_url"] = _http_url(base_url)
        if api_key is not None:
            chosen["api_key"] = api_key
        elif provider != "custom" and (key_env := providers[provider].get("api_key_env")):
            raise ConfigError(f"{provider} needs an API key (or skip setup and set {key_env})")
        if provider == "custom" and model is None:
            raise ConfigError("a custom server needs a model id: the name it serves the model under")

    # A model only makes sense for the provider it was chosen with: keep it when the
    # provider stays the same (a re-entered key), drop it otherwise.
    if model is not None:
        chosen["model"] = model
    elif layered.get("provider") == provider and layered.get("model"):
        chosen["model"] = layered["model"]
    return chosen


def _clean_key(api_key: str | None) -> str | None:
    key = (api_key or "").strip()
    if any(ch.isspace() for ch in key):  # a paste that caught more than the key
        raise ConfigError("the API key contains spaces or line breaks; paste only the key")
    return key or None


def _http_url(url: str) -> str:
    url = url.strip()
    try:
        parts = urlsplit(url)
        scheme, host = parts.scheme.lower(), parts.hostname
    except ValueError:  # e.g. an unclosed [IPv6 bracket
        scheme = host = None
    if scheme not in ("http", "https") or not host or any(ch.isspace() for ch in url):
        # The URL itself is not echoed: it is on screen already and may carry credentials.
        raise ConfigError("the server URL must start with http:// or https:// and name a host")
    return url


def _checkpoint_folder(model_path: str | None) -> str:
    if not (model_path or "").strip():
        raise ConfigError("the local engine needs the checkpoint folder (the one holding config.json)")
    folder = Path(model_path.strip()).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder; give the checkpoint folder (the one holding config.json)")
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{folder} has no config.json; give the checkpoint folder itself")
    return str(folder.resolve())


def _check_loads(path: Path, text: str) -> None:
    """Refuse to write a file load_settings would reject (a problem elsewhere in it)."""
    try:
        settings = Settings.model_validate(deep_merge(read_defaults(), tomllib.loads(text)))
    except ValidationError as exc:
        error = exc.errors()[0]  # loc and msg only: the input value could be a secret
        key = ".".join(str(part) for part in error["loc"])
        raise ConfigError(
            f"{path}: key '{key}': {error['msg']}; fix or remove that file, then run setup again "
            "(it was left unchanged)"
        ) from None
    # A choice this build cannot use (the local engine, before it exists) is refused here,
    # not saved: a saved one would stop every later start.
    resolve_endpoint(settings, env={})


def _write_private(path: Path, text: str) -> None:
    # Write through a symlink rather than replacing it (dotfile managers link this file).
    target = path.resolve() if path.is_symlink() else path
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:  # mkstemp made it 0600: it may hold a key
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, target)
    except BaseException as exc:
        with suppress(FileNotFoundError):
            os.unlink(temp)
        if isinstance(exc, OSError):
            raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
