"""Layered configuration: flags > env > project > user > built-in defaults.

Each TOML layer is validated on its own first, so an error names the file, the
line and the key that is wrong; then the layers are merged and validated again.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from kimicode.backends.base import ModelInfo
from kimicode.paths import project_config_path, user_config_path

ApprovalMode = Literal["ask", "auto-edit", "auto", "yolo", "plan"]

ENV_VARS = {
    "KIMICODE_PROVIDER": "provider",
    "KIMICODE_BASE_URL": "base_url",
    "KIMICODE_MODEL": "model",
    "KIMICODE_API_KEY": "api_key",
    "KIMICODE_APPROVAL_MODE": "approval_mode",
    "KIMICODE_BACKEND": "backend",
    "KIMICODE_MODEL_PATH": "model_path",
}


class ConfigError(Exception):
    """Bad configuration; the message is meant for the user as it is."""


class MissingCredentials(ConfigError):
    """No API key for the chosen provider: the TUI offers its first-run setup."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetrySettings(_Strict):
    max_attempts: int = Field(6, ge=1, description="Model calls tried per step before giving up.")
    base_delay: float = Field(1.0, ge=0, description="First backoff delay in seconds; doubles each retry.")
    max_delay: float = Field(60.0, ge=0, description="Cap on one backoff delay (and on Retry-After).")


class ProviderSettings(_Strict):
    base_url: str = Field(description="OpenAI-compatible endpoint, ending in /v1.")
    api_key_env: str | None = Field(None, description="Environment variable holding this provider's key.")
    model: str | None = Field(None, description="Model used with this provider when none is chosen.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra HTTP headers sent with each request.")


class ModelSettings(_Strict):
    context_window: int = Field(131_072, gt=0, description="Tokens the model accepts in total.")
    max_output: int = Field(16_384, gt=0, description="Most tokens one reply may produce.")
    temperature: float = Field(0.6, ge=0, le=2, description="0.6 for instruct, 1.0 for thinking models.")
    reasoning: bool = Field(False, description="Returns reasoning_content (thinking models).")
    input_price: float = Field(0.0, ge=0, description="USD per million uncached input tokens.")
    cached_input_price: float | None = Field(
        None, ge=0, description="USD per million cache-hit input tokens (default: input_price)."
    )
    output_price: float = Field(0.0, ge=0, description="USD per million output tokens.")


class LocalSettings(_Strict):
    """The in-process engine (backend "local"); see docs/engine.md."""

    device: str = Field("auto", description="auto | cpu | cuda (every visible GPU) | cuda:N.")
    dtype: Literal["bfloat16", "float16", "float32"] = Field("bfloat16", description="Compute dtype.")
    quant: Literal["auto", "none", "int4"] = Field(
        "auto", description="auto keeps the checkpoint's format; int4 quantises routed experts on load; none dequantises."
    )
    experts_on_cpu: bool = Field(False, description="Keep routed experts in host memory (a model larger than the GPUs).")
    context_window: int | None = Field(None, gt=0, description="Cap on the context (default: the checkpoint's).")
    max_output: int = Field(8192, gt=0, description="Most tokens one reply may produce.")
    temperature: float | None = Field(None, ge=0, le=2, description="Default: 0.6, or 1.0 for thinking checkpoints.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass.")
    seed: int | None = Field(None, description="Fixed sampling seed, for reproducible runs.")


class PermissionSettings(_Strict):
    allow: list[str] = Field(default_factory=list, description='Rules always allowed, e.g. "shell:pytest".')
    deny: list[str] = Field(default_factory=list, description="Rules always refused, same syntax.")


def _mcp_server_name(name: str) -> str:
    # The name prefixes each of the server's tool names, which allow only these.
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise PydanticCustomError(
            "mcp_server_name", "MCP server name '{name}' may use only letters, digits, '_' and '-'", {"name": name}
        )
    return name


class McpServerSettings(_Strict):
    """One MCP server: a command run over stdio, or a streamable HTTP url."""

    command: str | None = Field(None, description="Program that runs a stdio server, e.g. 'npx' or 'uvx'.")
    args: list[str] = Field(default_factory=list, description="Arguments of the command.")
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment of the command; ${VAR} is read from kimicode's."
    )
    cwd: str | None = Field(None, description="Working folder of the command, relative to the workspace (default: it).")
    url: str | None = Field(None, description="Endpoint of a streamable HTTP server, e.g. https://example.com/mcp.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="HTTP headers sent to the url; ${VAR} is read from the environment."
    )
    timeout: float = Field(60.0, gt=0, description="Seconds one tool call may take.")
    startup_timeout: float = Field(20.0, gt=0, description="Seconds to start the server and list its tools.")
    enabled: bool = Field(True, description="false keeps the entry without starting the server.")
    expand_env: bool = Field(True, description="Replace ${VAR} in env and headers with kimicode's environment.")

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerSettings:
        if (self.command is None) == (self.url is None):
            raise PydanticCustomError(
                "mcp_transport", "set exactly one of 'command' (a stdio server) or 'url' (a streamable HTTP server)"
            )
        misplaced = ["headers"] if self.command and self.headers else []
        misplaced += [key for key in ("args", "env", "cwd") if self.url and getattr(self, key)]
        if misplaced:
            raise PydanticCustomError(
                "mcp_transport",
                "{keys} apply only to {kind} servers",
                {"keys": ", ".join(f"'{key}'" for key in misplaced), "kind": "HTTP" if self.command else "command"},
            )
        return self


class Settings(_Strict):
    backend: Literal["api", "local"] = Field("api", description="api (an OpenAI-compatible endpoint) or local (the in-process engine).")
    provider: str = Field("moonshot", description="A name from [providers], or 'custom' with base_url.")
    base_url: str | None = Field(None, description="Overrides the provider's endpoint.")
    api_key: str | None = Field(None, description="API key; prefer the provider's environment variable.")
    model: str | None = Field(None, description="Model id; defaults to the provider's model.")
    model_path: str | None = Field(None, description="K2-family checkpoint folder for backend 'local'.")
    local: LocalSettings = Field(default_factory=LocalSettings)
    approval_mode: ApprovalMode | None = Field(None, description="ask (interactive default) | auto-edit | auto (headless default) | yolo | plan.")
    max_steps: int = Field(100, ge=1, description="Most model calls in one task.")
    max_cost: float | None = Field(None, gt=0, description="Stop once the task has cost this many USD.")
    max_tokens: int | None = Field(None, gt=0, description="Stop once the task has used this many tokens (in + out).")
    timeout: float | None = Field(None, gt=0, description="Stop a task after this many seconds.")
    test_command: str | None = Field(None, description="How to run the tests; detected from the repo when unset.")
    auto_test: bool = Field(True, description="Run the tests when the agent finishes an edit; feed failures back.")
    repo_map: bool = Field(True, description="Index the repository (tree-sitter) for the repo map and symbol tools.")
    repo_map_tokens: int | None = Field(None, gt=0, description="Repo map size in the prompt (default: window/8, 1k-8k).")
    checkpoints: bool = Field(True, description="Snapshot the work tree before each turn and risky command (undo).")
    auto_commit: bool = Field(False, description="Commit each successful task on the current branch.")
    shell_timeout: float = Field(120.0, gt=0, le=3600, description="Default timeout of one shell command (s).")
    request_timeout: float = Field(300.0, gt=0, description="Timeout of one model request (s).")
    retry: RetrySettings = Field(default_factory=RetrySettings)
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    models: dict[str, ModelSettings] = Field(default_factory=dict)
    permissions: PermissionSettings = Field(default_factory=PermissionSettings)
    theme: str = Field("textual-dark", description="Colours of the interactive app: textual-dark, textual-light, nord, gruvbox, …")
    trusted_projects: list[str] = Field(
        default_factory=list, description="Project folders whose own .kimicode/config.toml is fully trusted."
    )
    mcp_servers: dict[Annotated[str, AfterValidator(_mcp_server_name)], McpServerSettings] = Field(
        default_factory=dict, description="MCP servers whose tools the agent may use, by name (see docs/mcp.md)."
    )


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to reach the model, resolved from the settings."""

    provider: str
    base_url: str
    api_key: str
    model: ModelInfo
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class _Layer:
    source: str  # a file path, "environment", "command line" or "built-in defaults"
    data: dict[str, Any]
    text: str | None = None  # the file's text, to point at lines in error messages


def load_settings(
    workspace: Path,
    flags: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> Settings:
    """Merge every layer; raise ConfigError naming the file, line and key at fault."""
    env = os.environ if env is None else env
    layers = [_Layer("built-in defaults", read_defaults())]
    if user := _read_file_layer(user_config_path()):
        layers.append(user)
    if project := _read_file_layer(project_config_path(workspace)):
        if not _trusted(workspace, layers, env):
            _refuse_untrusted_keys(project)
        layers.append(project)
    layers.append(_Layer("environment", {key: env[var] for var, key in ENV_VARS.items() if env.get(var)}))
    layers.append(_Layer("command line", {k: v for k, v in (flags or {}).items() if v is not None}))

    # Each layer is validated merged onto those below it, so a file may set one key of
    # a table (a provider's api_key_env, say) and an error still points into that file.
    merged: dict[str, Any] = {}
    settings = None
    for layer in layers:
        merged = deep_merge(merged, layer.data)
        settings = _validate(layer, merged)
    assert settings is not None
    return settings


# Keys a repository's own .kimicode/config.toml may not set unless the user trusts it:
# they could send the user's API keys elsewhere or loosen what runs without asking
# (an MCP server is a command kimicode would start).
_TRUST_ONLY_KEYS = ("base_url", "api_key", "providers", "trusted_projects", "permissions.allow", "mcp_servers")
_TRUST_ONLY_MODES = ("auto", "yolo")


def _trusted(workspace: Path, layers: list[_Layer], env: dict[str, str]) -> bool:
    if env.get("KIMICODE_TRUST_PROJECT", "").lower() in ("1", "true", "yes"):
        return True
    trusted: list[str] = []
    for layer in layers:
        trusted += layer.data.get("trusted_projects") or []
    return any(Path(os.path.expanduser(p)).resolve() == workspace.resolve() for p in trusted if isinstance(p, str))


def _refuse_untrusted_keys(layer: _Layer) -> None:
    data = layer.data
    offending = [key for key in _TRUST_ONLY_KEYS if _lookup(data, key) is not None]
    if data.get("approval_mode") in _TRUST_ONLY_MODES:
        offending.append("approval_mode")
    if not offending:
        return
    key = offending[0]
    line = _find_line(layer.text or "", key.split("."))
    raise ConfigError(
        f"{layer.source}{f':{line}' if line else ''}: this project's config sets '{key}', which only a "
        f"trusted project may set (it could send your API key elsewhere or run commands without asking). "
        f"If you trust this repository, add it to trusted_projects in {user_config_path()} "
        f"or set KIMICODE_TRUST_PROJECT=1; otherwise remove the key."
    )


def _lookup(data: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)  # type: ignore[assignment]
    return data


def resolve_endpoint(settings: Settings, env: dict[str, str] | None = None) -> Endpoint:
    env = os.environ if env is None else env
    if is_local(settings):
        return local_endpoint(settings)
    provider = settings.providers.get(settings.provider)
    if provider is None and settings.provider != "custom":
        known = ", ".join(sorted([*settings.providers, "custom"]))
        raise ConfigError(f"unknown provider {settings.provider!r}; choose one of: {known} (or --backend local)")
    base_url = settings.base_url or (provider.base_url if provider else None)
    if not base_url:
        raise ConfigError("provider 'custom' needs a base_url (--base-url or KIMICODE_BASE_URL)")
    model_name = settings.model or (provider.model if provider else None)
    if not model_name:
        raise ConfigError("no model chosen: pass --model or set KIMICODE_MODEL")

    # A provider's own key is only sent to that provider's endpoint.
    own_endpoint = provider is not None and base_url.rstrip("/") == provider.base_url.rstrip("/")
    key = settings.api_key or (env.get(provider.api_key_env or "") if own_endpoint and provider else None)
    if not key:
        if own_endpoint and provider is not None and provider.api_key_env:
            raise MissingCredentials(
                f"no API key for {settings.provider}: set {provider.api_key_env} or KIMICODE_API_KEY"
            )
        key = "none"  # self-hosted servers (vLLM, SGLang) often need no key
    headers = provider.headers if provider else {}
    return Endpoint(settings.provider, base_url, key, model_info(settings, model_name), headers)


def is_local(settings: Settings) -> bool:
    return settings.backend == "local" or settings.provider == "local"


def local_endpoint(settings: Settings) -> Endpoint:
    """The in-process engine's model facts, read from the checkpoint's config.json (no torch)."""
    import json

    if not settings.model_path:
        raise ConfigError("backend 'local' needs a checkpoint folder: pass --model-path DIR or set model_path")
    folder = Path(settings.model_path).expanduser()
    try:
        raw = json.loads((folder / "config.json").read_text())
    except FileNotFoundError:
        raise ConfigError(f"--model-path {folder}: no config.json there (a Hugging Face checkpoint folder is needed)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{folder / 'config.json'}: unreadable ({exc})") from exc
    for name in ("tiktoken.model", "tokenizer_config.json"):
        if not (folder / name).is_file():
            raise ConfigError(f"--model-path {folder}: {name} is missing (the K2 tokenizer ships with the weights)")
    text = raw.get("text_config", raw)
    template = ""
    try:
        template = str(json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template") or "")
    except (OSError, json.JSONDecodeError):
        pass
    thinking = "<think>" in template
    local = settings.local
    window = int(text.get("max_position_embeddings", 131_072))
    info = ModelInfo(
        name=folder.name,  # not settings.model: that names a model of the API providers
        context_window=min(window, local.context_window or window),
        max_output=local.max_output,
        temperature=local.temperature if local.temperature is not None else (1.0 if thinking else 0.6),
        supports_reasoning=thinking,
    )
    return Endpoint("local", str(folder), "", info, {})


def model_info(settings: Settings, name: str) -> ModelInfo:
    known = settings.models.get(name)
    if known is None:  # a model we have no table entry for, e.g. on a self-hosted server
        thinking = "thinking" in name or "k2.5" in name
        known = ModelSettings(temperature=1.0 if thinking else 0.6, reasoning=thinking)
    return ModelInfo(
        name=name,
        context_window=known.context_window,
        max_output=known.max_output,
        temperature=known.temperature,
        input_price=known.input_price,
        output_price=known.output_price,
        cached_input_price=known.input_price if known.cached_input_price is None else known.cached_input_price,
        supports_reasoning=known.reasoning,
    )


def read_defaults() -> dict[str, Any]:
    return tomllib.loads(resources.files("kimicode").joinpath("defaults.toml").read_text())


def _read_file_layer(path: Path) -> _Layer | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:  # a directory, no permission, not UTF-8
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return _Layer(str(path), data, text)


def _validate(layer: _Layer, merged: dict[str, Any]) -> Settings:
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = layer.source
        if layer.source == "environment":
            where = "environment variable " + next(v for v, k in ENV_VARS.items() if k == error["loc"][0])
        if layer.text is not None:
            line = _find_line(layer.text, [str(p) for p in error["loc"]])
            where = f"{layer.source}:{line}" if line else layer.source
        raise ConfigError(f"{where}: {_describe(error)}") from None


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown key '{key}'"
    return f"key '{key}': {error['msg']}"


def _find_line(text: str, loc: list[str]) -> int | None:
    """The line where the key at `loc` is set, else the closest table header (best
    effort: TOML parsers keep no positions)."""
    table: list[str] = []
    same_name = enclosing = None
    enclosing_depth = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        header = re.fullmatch(r"\[\[?\s*([^\]]+?)\s*\]\]?(\s*#.*)?", line)
        if header:
            table = _split_key(header.group(1))
            if table == loc:
                return number  # the error is about the table itself
            if table == loc[: len(table)] and len(table) > enclosing_depth:
                enclosing, enclosing_depth = number, len(table)
            continue
        match = re.match(r"""((?:"[^"]*"|'[^']*'|[A-Za-z0-9_.\- ])+?)\s*=""", line)
        if not match:
            continue
        key_path = table + _split_key(match.group(1))
        if key_path == loc[: len(key_path)]:
            return number
        if same_name is None and key_path[-1:] == loc[-1:]:
            same_name = number
    return same_name or enclosing


def _split_key(dotted: str) -> list[str]:
    """`models."kimi-k2.5".temperature` -> ["models", "kimi-k2.5", "temperature"]."""
    parts = re.findall(r"""\s*("[^"]*"|'[^']*'|[^."']+)\s*""", dotted)
    return [part.strip().strip("\"'") for part in parts]


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
