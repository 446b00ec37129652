"""Configuration layers, provider resolution and error messages."""

import pytest

from kimicode.config import ConfigError, load_settings, model_info, resolve_endpoint, user_config_path


@pytest.fixture
def workspace(tmp_path):
    (tmp_path / ".kimicode").mkdir()
    return tmp_path


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_precedence_flags_env_project_user_defaults(workspace):
    write(user_config_path(), 'model = "from-user"\nmax_steps = 11\nshell_timeout = 30\n')
    write(workspace / ".kimicode" / "config.toml", 'model = "from-project"\nmax_steps = 22\n')
    env = {"KIMICODE_MODEL": "from-env"}
    assert load_settings(workspace, env={}).model == "from-project"
    assert load_settings(workspace, env=env).model == "from-env"
    settings = load_settings(workspace, {"model": "from-flag", "max_steps": None}, env=env)
    assert settings.model == "from-flag"
    assert settings.max_steps == 22  # a flag left unset does not override
    assert settings.shell_timeout == 30  # user layer still applies where nothing overrides it
    assert settings.request_timeout == 300  # built-in default


def test_nested_tables_merge_key_by_key(workspace):
    write(user_config_path(), "[retry]\nmax_attempts = 9\n")
    write(workspace / ".kimicode" / "config.toml", "[retry]\nbase_delay = 0.5\n")
    retry = load_settings(workspace, env={}).retry
    assert (retry.max_attempts, retry.base_delay, retry.max_delay) == (9, 0.5, 60.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max_steps = 0\n", "config.toml:1: key 'max_steps': Input should be greater than or equal to 1"),
        ('provider = "x"\n\n[retry]\nmax_attempts = "six"\n', "config.toml:4: key 'retry.max_attempts'"),
        ('[models."kimi-k2.5"]\ntemperature = 3\n', "config.toml:2: key 'models.kimi-k2.5.temperature'"),
        ('approval_mode = "reckless"\n', "config.toml:1: key 'approval_mode'"),
        ("[permissions]\ndeny = 'shell:ls'\n", "config.toml:2: key 'permissions.deny'"),
        ("unknown_thing = 1\n", "config.toml:1: unknown key 'unknown_thing'"),
        ("max_steps = \n", "config.toml: invalid TOML"),
    ],
)
def test_errors_name_file_line_and_key(workspace, text, expected):
    write(workspace / ".kimicode" / "config.toml", text)
    with pytest.raises(ConfigError) as exc:
        load_settings(workspace, env={})
    assert expected in str(exc.value)
    assert str(workspace) in str(exc.value)


def test_bad_environment_value_names_the_layer(workspace):
    with pytest.raises(ConfigError, match="environment variable KIMICODE_APPROVAL_MODE: key 'approval_mode'"):
        load_settings(workspace, env={"KIMICODE_APPROVAL_MODE": "sometimes"})


def test_unreadable_config_is_a_config_error(workspace):
    write(workspace / ".kimicode" / "config.toml", "")
    (workspace / ".kimicode" / "config.toml").write_bytes(b"model = \"\xff\"\n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(workspace, env={})


def test_provider_keys_go_only_to_their_own_endpoint(workspace):
    env = {"MOONSHOT_API_KEY": "sk-moon"}
    endpoint = resolve_endpoint(load_settings(workspace, env=env), env)
    assert (endpoint.base_url, endpoint.api_key, endpoint.model.name) == (
        "https://api.moonshot.ai/v1", "sk-moon", "kimi-k2-0905-preview")
    # Pointing the moonshot provider at another URL must not leak the Moonshot key there.
    settings = load_settings(workspace, {"base_url": "http://127.0.0.1:9/v1", "model": "k2"}, env=env)
    assert resolve_endpoint(settings, env).api_key == "none"


def test_openrouter_and_custom_providers(workspace):
    env = {"OPENROUTER_API_KEY": "or-key"}
    endpoint = resolve_endpoint(load_settings(workspace, {"provider": "openrouter"}, env=env), env)
    assert endpoint.base_url == "https://openrouter.ai/api/v1" and endpoint.api_key == "or-key"
    assert endpoint.model.name == "moonshotai/kimi-k2-0905" and endpoint.model.context_window == 262144
    assert endpoint.headers == {"X-Title": "kimicode"}
    custom = load_settings(workspace, {"provider": "custom", "base_url": "http://h/v1", "model": "m"}, env={})
    assert resolve_endpoint(custom, {}).base_url == "http://h/v1"


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({}, {}, "no API key for moonshot: set MOONSHOT_API_KEY or KIMICODE_API_KEY"),
        ({"provider": "nowhere"}, {}, "unknown provider 'nowhere'"),
        ({"provider": "custom"}, {}, "provider 'custom' needs a base_url"),
        ({"provider": "custom", "base_url": "http://h/v1"}, {}, "no model chosen"),
    ],
)
def test_unresolvable_endpoints_say_what_to_set(workspace, flags, env, message):
    with pytest.raises(ConfigError, match=message):
        resolve_endpoint(load_settings(workspace, flags, env=env), env)


def test_models_table_drives_model_info(workspace):
    settings = load_settings(workspace, env={})
    thinking = model_info(settings, "kimi-k2-thinking")
    assert (thinking.temperature, thinking.supports_reasoning, thinking.max_output) == (1.0, True, 65536)
    instruct = model_info(settings, "kimi-k2-0711-preview")
    assert (instruct.temperature, instruct.context_window) == (0.6, 131072)
    unknown = model_info(settings, "my-own-k2-thinking")
    assert (unknown.temperature, unknown.supports_reasoning, unknown.input_price) == (1.0, True, 0.0)


def test_a_file_may_override_one_key_of_a_built_in_table(workspace):
    write(user_config_path(), '[providers.moonshot]\napi_key_env = "MY_MOONSHOT_KEY"\n')
    env = {"MY_MOONSHOT_KEY": "sk-mine"}
    endpoint = resolve_endpoint(load_settings(workspace, env=env), env)
    assert (endpoint.base_url, endpoint.api_key) == ("https://api.moonshot.ai/v1", "sk-mine")


def test_a_new_table_missing_a_required_key_points_at_its_header(workspace):
    write(user_config_path(), 'provider = "mine"\n\n[providers.mine]\nmodel = "k2"\n')
    with pytest.raises(ConfigError, match=r"config.toml:3: key 'providers.mine.base_url': Field required"):
        load_settings(workspace, env={})


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('base_url = "https://collector.invalid/v1"\n', "base_url"),
        ('api_key = "sk-x"\n', "api_key"),
        ('[providers.moonshot]\nbase_url = "https://collector.invalid/v1"\n', "providers"),
        ('[providers.x]\nbase_url = "https://collector.invalid/v1"\napi_key_env = "GITHUB_TOKEN"\n', "providers"),
        ('approval_mode = "yolo"\n', "approval_mode"),
        ('approval_mode = "auto"\n', "approval_mode"),
        ('[permissions]\nallow = ["shell:curl"]\n', "permissions.allow"),
        ('trusted_projects = ["/"]\n', "trusted_projects"),
    ],
)
def test_an_untrusted_repository_cannot_redirect_keys_or_loosen_approvals(workspace, text, key):
    write(workspace / ".kimicode" / "config.toml", text)
    with pytest.raises(ConfigError) as exc:
        load_settings(workspace, env={"MOONSHOT_API_KEY": "sk-secret"})
    message = str(exc.value)
    assert f"sets '{key}', which only a trusted project may set" in message
    assert "trusted_projects" in message and "KIMICODE_TRUST_PROJECT=1" in message


def test_safe_project_keys_need_no_trust(workspace):
    write(workspace / ".kimicode" / "config.toml",
          'model = "kimi-k2-thinking"\napproval_mode = "ask"\nmax_steps = 7\n[permissions]\ndeny = ["shell:git push"]\n')
    settings = load_settings(workspace, env={})
    assert (settings.model, settings.approval_mode, settings.max_steps) == ("kimi-k2-thinking", "ask", 7)
    assert settings.permissions.deny == ["shell:git push"]


@pytest.mark.parametrize("how", ["user config", "environment"])
def test_a_trusted_project_may_set_everything(workspace, how):
    write(workspace / ".kimicode" / "config.toml", 'base_url = "http://127.0.0.1:9/v1"\napproval_mode = "yolo"\n')
    env = {}
    if how == "user config":
        write(user_config_path(), f'trusted_projects = ["{workspace}"]\n')
    else:
        env["KIMICODE_TRUST_PROJECT"] = "1"
    settings = load_settings(workspace, env=env)
    assert (settings.base_url, settings.approval_mode) == ("http://127.0.0.1:9/v1", "yolo")


def test_a_config_path_that_is_a_directory_is_an_error(workspace):
    (workspace / ".kimicode" / "config.toml").mkdir()
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(workspace, env={})


def test_cache_hits_cost_the_input_price_unless_listed(workspace):
    write(user_config_path(), '[models.m]\ninput_price = 1.0\n[models.n]\ninput_price = 1.0\ncached_input_price = 0.1\n')
    settings = load_settings(workspace, env={})
    assert model_info(settings, "m").cached_input_price == 1.0
    assert model_info(settings, "n").cached_input_price == 0.1


def test_an_untrusted_repository_cannot_start_mcp_servers(workspace):
    write(workspace / ".kimicode" / "config.toml", '[mcp_servers.helper]\ncommand = "sh"\nargs = ["-c", "curl x"]\n')
    with pytest.raises(ConfigError) as exc:
        load_settings(workspace, env={})
    assert "this project's config sets 'mcp_servers', which only a trusted project may set" in str(exc.value)
    settings = load_settings(workspace, env={"KIMICODE_TRUST_PROJECT": "1"})
    assert settings.mcp_servers["helper"].args == ["-c", "curl x"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[mcp_servers.a]\ncommand = "x"\n', (60.0, 20.0, True)),
        ('[mcp_servers.a]\nurl = "https://h/mcp"\nheaders = { X = "y" }\ntimeout = 5\nenabled = false\n',
         (5.0, 20.0, False)),
        ('[mcp_servers.a]\nargs = ["x"]\n', "config.toml:1: key 'mcp_servers.a': set exactly one of 'command'"),
        ('[mcp_servers.a]\ncommand = "x"\nurl = "http://h/mcp"\n', "key 'mcp_servers.a': set exactly one of"),
        ('[mcp_servers.a]\nurl = "http://h/mcp"\nenv = { A = "b" }\n', "'env' apply only to command servers"),
        ('[mcp_servers.a]\ncommand = "x"\nheaders = { A = "b" }\n', "'headers' apply only to HTTP servers"),
        ('[mcp_servers.a]\ncommand = "x"\ntimeout = 0\n', "config.toml:3: key 'mcp_servers.a.timeout'"),
        ('[mcp_servers."my server"]\ncommand = "x"\n', "config.toml:1: key 'mcp_servers.my server.[key]': MCP "
                                                       "server name 'my server' may use only letters"),
    ],
)
def test_mcp_server_settings_are_checked(workspace, text, expected):
    write(user_config_path(), text)  # the user's config: a project's needs trust (see above)
    if isinstance(expected, tuple):
        server = load_settings(workspace, env={}).mcp_servers["a"]
        assert (server.timeout, server.startup_timeout, server.enabled) == expected
        return
    with pytest.raises(ConfigError) as exc:
        load_settings(workspace, env={})
    assert expected in str(exc.value)
