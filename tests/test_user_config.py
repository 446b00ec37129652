"""save_backend_choice: what the first-run setup writes into the user config."""

import stat

import pytest

from kimicode.config import ConfigError, load_settings, resolve_endpoint, user_config_path
from kimicode.user_config import save_backend_choice

EXISTING = """\
# my settings: keep this comment
model = "moonshotai/kimi-k2-0905"  # the one I like
provider = "openrouter"
base_url = "http://old-proxy:9000/v1"
model_path = "/old/checkpoint"
max_steps = 42

[permissions]
# tests are always fine
allow = ["shell:pytest"]
"""


def write_user_config(text):
    path = user_config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def checkpoint(tmp_path):
    """What the setup checks of a checkpoint folder: its config and tokenizer files."""
    folder = tmp_path / "kimi-k2"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "kimi_k2", "max_position_embeddings": 262144}')
    (folder / "tiktoken.model").write_text("IQ== 0\n")
    (folder / "tokenizer_config.json").write_text("{}")
    return folder


def test_writes_to_an_empty_home_and_the_key_comes_from_the_file(tmp_path):
    assert not user_config_path().parent.exists()
    path = save_backend_choice("moonshot", api_key="sk-from-setup")
    assert path == user_config_path()
    settings = load_settings(tmp_path, env={})
    assert (settings.provider, settings.api_key) == ("moonshot", "sk-from-setup")
    endpoint = resolve_endpoint(settings, env={})
    assert (endpoint.provider, endpoint.base_url, endpoint.api_key) == (
        "moonshot",
        "https://api.moonshot.ai/v1",
        "sk-from-setup",
    )


def test_file_is_private_and_written_without_leftover_temp_files():
    path = save_backend_choice("openrouter", api_key="sk-or-1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]


def test_an_existing_public_file_becomes_private():
    path = write_user_config("max_steps = 5\n")
    path.chmod(0o644)
    save_backend_choice("openrouter", api_key="sk-or-1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_keeps_comments_tables_and_other_keys_and_drops_stale_backend_keys(tmp_path):
    path = write_user_config(EXISTING)
    save_backend_choice("moonshot", api_key="sk-new")
    text = path.read_text()
    assert "# my settings: keep this comment" in text
    assert "# tests are always fine" in text
    assert "[permissions]" in text
    assert "old-proxy" not in text and "model_path" not in text
    settings = load_settings(tmp_path, env={})
    assert settings.max_steps == 42
    assert settings.permissions.allow == ["shell:pytest"]
    assert (settings.provider, settings.api_key, settings.base_url, settings.model_path) == (
        "moonshot",
        "sk-new",
        None,
        None,
    )
    # The old model belonged to openrouter; moonshot falls back to its own default.
    assert settings.model is None
    assert resolve_endpoint(settings, env={}).model.name == "kimi-k2-0905-preview"


def test_reentering_a_key_for_the_same_provider_keeps_its_model(tmp_path):
    write_user_config('provider = "openrouter"\nmodel = "moonshotai/kimi-k2.5"\n')
    save_backend_choice("openrouter", api_key="sk-or-2")
    endpoint = resolve_endpoint(load_settings(tmp_path, env={}), env={})
    assert (endpoint.model.name, endpoint.api_key) == ("moonshotai/kimi-k2.5", "sk-or-2")


def test_custom_server_replaces_an_old_key_and_resolves_to_its_url(tmp_path, fake_openai):
    write_user_config('provider = "moonshot"\napi_key = "sk-moonshot-secret"\n')
    save_backend_choice("custom", base_url=fake_openai.base_url, model="served-model")
    text = user_config_path().read_text()
    assert "sk-moonshot-secret" not in text  # never sent to the new server
    endpoint = resolve_endpoint(load_settings(tmp_path, env={}), env={})
    assert (endpoint.provider, endpoint.base_url) == ("custom", fake_openai.base_url)
    assert endpoint.model.name == "served-model"
    assert endpoint.api_key == "none"


def test_custom_server_with_a_key(tmp_path):
    save_backend_choice("custom", base_url=" https://llm.internal/v1 ", api_key="proxy-key", model="kimi")
    endpoint = resolve_endpoint(load_settings(tmp_path, env={}), env={})
    assert (endpoint.base_url, endpoint.api_key) == ("https://llm.internal/v1", "proxy-key")


def test_a_folder_without_the_tokenizer_is_refused_and_nothing_saved(tmp_path, checkpoint):
    old = 'provider = "custom"\nbase_url = "http://old:1/v1"\napi_key = "sk-old"\nmodel = "m"\n'
    write_user_config(old)
    (checkpoint / "tiktoken.model").unlink()
    with pytest.raises(ConfigError, match="tiktoken.model is missing"):
        save_backend_choice("local", model_path=str(checkpoint))
    assert user_config_path().read_text() == old  # a start that always fails is never saved


def test_local_engine_stores_the_absolute_folder_and_drops_url_and_key(tmp_path, checkpoint, monkeypatch):
    write_user_config('provider = "custom"\nbase_url = "http://old:1/v1"\napi_key = "sk-old"\nmodel = "m"\n')
    monkeypatch.chdir(checkpoint.parent)
    save_backend_choice("local", model_path="kimi-k2")
    settings = load_settings(tmp_path, env={})
    assert (settings.provider, settings.model_path) == ("local", str(checkpoint.resolve()))
    assert (settings.base_url, settings.api_key, settings.model) == (None, None, None)
    endpoint = resolve_endpoint(settings, env={})
    assert (endpoint.provider, endpoint.model.name, endpoint.model.context_window) == ("local", "kimi-k2", 262144)


def test_moonshot_china_platform(tmp_path):
    save_backend_choice("moonshot-cn", api_key="sk-cn")
    assert resolve_endpoint(load_settings(tmp_path, env={}), env={}).base_url == "https://api.moonshot.cn/v1"


def test_invalid_toml_is_left_untouched():
    broken = "# precious notes\nprovider = \n[permissions\n"
    path = write_user_config(broken)
    with pytest.raises(ConfigError) as exc:
        save_backend_choice("moonshot", api_key="sk-1")
    message = str(exc.value)
    assert str(path) in message and "not valid TOML" in message and "Fix or remove" in message
    assert path.read_text() == broken
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]


def test_a_file_with_a_bad_value_elsewhere_is_left_untouched():
    path = write_user_config("max_steps = 0\n")
    with pytest.raises(ConfigError, match="key 'max_steps'") as exc:
        save_backend_choice("openrouter", api_key="sk-or-1")
    assert str(path) in str(exc.value)
    assert path.read_text() == "max_steps = 0\n"


@pytest.mark.parametrize(
    ("provider", "arguments", "expected"),
    [
        ("moonshot", {}, "moonshot needs an API key"),
        ("moonshot", {"api_key": "   "}, "needs an API key (or skip setup and set MOONSHOT_API_KEY)"),
        ("openrouter", {"api_key": ""}, "set OPENROUTER_API_KEY"),
        ("openrouter", {"api_key": "sk-or\nsk-or"}, "paste only the key"),
        ("custom", {"model": "m"}, "needs its URL"),
        ("custom", {"base_url": "localhost:8000/v1", "model": "m"}, "must start with http:// or https://"),
        ("custom", {"base_url": "ftp://host/v1", "model": "m"}, "must start with http:// or https://"),
        ("custom", {"base_url": "http:///v1", "model": "m"}, "name a host"),
        ("custom", {"base_url": "http://[::1/v1", "model": "m"}, "name a host"),
        ("custom", {"base_url": "http://host/v1"}, "needs a model id"),
        ("local", {}, "needs the checkpoint folder"),
        ("local", {"model_path": "/no/such/folder"}, "/no/such/folder is not a folder"),
        ("moonshot", {"api_key": "k", "model_path": "/x"}, "only used with the local engine"),
        ("kimi", {"api_key": "k"}, "unknown provider 'kimi'; choose one of: custom, local, moonshot"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message_and_nothing_written(provider, arguments, expected):
    with pytest.raises(ConfigError) as exc:
        save_backend_choice(provider, **arguments)
    assert expected in str(exc.value)
    assert not user_config_path().exists()


def test_a_folder_without_config_json_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="has no config.json"):
        save_backend_choice("local", model_path=str(tmp_path))


def test_error_messages_never_contain_the_key():
    with pytest.raises(ConfigError) as exc:
        save_backend_choice("openrouter", api_key="sk-secret part")
    assert "sk-secret" not in str(exc.value)


def test_an_explicit_path_is_used_and_its_folders_created(tmp_path):
    target = tmp_path / "a" / "b" / "config.toml"
    assert save_backend_choice("openrouter", api_key="sk-or-1", path=target) == target
    assert 'api_key = "sk-or-1"' in target.read_text()
    assert not user_config_path().exists()


def test_a_symlinked_config_is_written_through(tmp_path):
    real = tmp_path / "dotfiles" / "kimicode.toml"
    real.parent.mkdir()
    real.write_text("# managed by my dotfiles\n")
    link = user_config_path()
    link.parent.mkdir(parents=True)
    link.symlink_to(real)
    save_backend_choice("openrouter", api_key="sk-or-1")
    assert link.is_symlink()
    assert "# managed by my dotfiles" in real.read_text() and "sk-or-1" in real.read_text()
