"""SetupScreen driven by the keyboard through Textual's Pilot."""

import html
from pathlib import Path

import pytest
from textual.app import App
from textual.widgets import Input, Static

import kimicode.tui
from kimicode.config import load_settings, resolve_endpoint, user_config_path
from kimicode.tui.screens.setup import SetupResult, SetupScreen

SETUP_CSS = Path(kimicode.tui.__file__).parent / "styles" / "setup.tcss"
REASON = "no API key for moonshot: set MOONSHOT_API_KEY or KIMICODE_API_KEY"
SECRET = "sk-secret-4242"


class SetupHarness(App):
    """Pushes SetupScreen first thing and records what it dismisses with."""

    CSS_PATH = SETUP_CSS

    def __init__(self, **screen_options) -> None:
        super().__init__()
        self.screen_options = screen_options
        self.results: list[SetupResult | None] = []

    def on_mount(self) -> None:
        self.push_screen(SetupScreen(REASON, **self.screen_options), self.results.append)

    async def action_quit(self) -> None:
        # As the real app must: Textual's ctrl+q (a priority binding) ends setup like Esc.
        if isinstance(self.screen, SetupScreen):
            self.screen.action_cancel()
        else:
            self.exit()


def rendered_text(app: App) -> str:
    """What the terminal shows, from the SVG screenshot (spans joined back into lines)."""
    svg = app.export_screenshot()
    return html.unescape(svg).replace("\xa0", " ")


def visible_fields(app: App) -> set[str]:
    return {field.id for field in app.screen.query(Input) if field.display and field.parent.parent.display}


async def type_text(pilot, text: str) -> None:
    await pilot.press(*text)


async def test_moonshot_key_is_saved_and_never_shown(tmp_path):
    app = SetupHarness()
    async with app.run_test(size=(80, 24)) as pilot:
        assert isinstance(app.screen, SetupScreen)
        assert REASON in rendered_text(app)
        await pilot.press("tab")
        assert app.focused.id == "moonshot-key"
        await type_text(pilot, SECRET)
        assert app.focused.value == SECRET  # typed in full, yet...
        text = rendered_text(app)
        assert SECRET not in text and "4242" not in text  # ...only masked on screen
        assert "•" * len(SECRET) in text
        await pilot.press("enter")
        await pilot.pause()

    assert app.results == [SetupResult("moonshot", user_config_path())]
    settings = load_settings(tmp_path, env={})
    assert resolve_endpoint(settings, env={}).api_key == SECRET


async def test_custom_url_error_is_shown_inline_then_fixed(tmp_path, fake_openai):
    app = SetupHarness()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3")
        assert visible_fields(app) == {"custom-url", "custom-key", "custom-model"}
        await pilot.press("tab")
        await type_text(pilot, fake_openai.base_url.removeprefix("http://"))
        await pilot.press("tab", "tab")
        await type_text(pilot, "served-model")
        await pilot.press("enter")
        await pilot.pause()

        assert isinstance(app.screen, SetupScreen)  # still here
        error = app.screen.query_one("#setup-error", Static)
        assert error.display
        assert "must start with http:// or https://" in str(error.render())
        assert "must start with http://" in rendered_text(app)
        assert not user_config_path().exists()
        url = app.screen.query_one("#custom-url", Input)
        assert url.value == fake_openai.base_url.removeprefix("http://")  # what was typed stays
        assert "served-model" in rendered_text(app)  # plain fields do show what is typed

        url.focus()
        await pilot.press("home")
        await type_text(pilot, "http://")
        await pilot.press("enter")
        await pilot.pause()

    assert app.results == [SetupResult("custom", user_config_path())]
    endpoint = resolve_endpoint(load_settings(tmp_path, env={}), env={})
    assert (endpoint.base_url, endpoint.model.name) == (fake_openai.base_url, "served-model")


@pytest.mark.parametrize("key", ["escape", "ctrl+q"])
async def test_escape_and_ctrl_q_dismiss_with_none(key):
    app = SetupHarness()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("tab")
        await type_text(pilot, SECRET)
        await pilot.press(key)
        await pilot.pause()
        assert not isinstance(app.screen, SetupScreen)
    assert app.results == [None]
    assert not user_config_path().exists()


async def test_only_the_chosen_options_fields_are_shown():
    app = SetupHarness()
    async with app.run_test(size=(80, 24)) as pilot:
        assert visible_fields(app) == {"moonshot-key"}
        await pilot.press("down")  # arrows choose, not just highlight
        assert visible_fields(app) == {"openrouter-key"}
        await pilot.press("4")
        assert visible_fields(app) == {"local-folder"}
        await pilot.press("up")
        assert visible_fields(app) == {"custom-url", "custom-key", "custom-model"}
        await pilot.press("1", "tab")
        await type_text(pilot, "3")  # a digit typed in a field is text, not a choice
        assert visible_fields(app) == {"moonshot-key"}
        assert app.focused.value == "3"


async def test_tab_visits_only_the_shown_fields():
    app = SetupHarness()
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.focused.id == "backend"
        order = []
        for _ in range(3):
            await pilot.press("tab")
            order.append(app.focused.id)
        assert order == ["moonshot-key", "moonshot-cn", "backend"]


async def test_enter_on_the_choice_moves_to_its_first_field():
    app = SetupHarness()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2", "enter")
        assert app.focused.id == "openrouter-key"
        assert app.results == []


async def test_empty_key_is_refused_inline_and_the_error_clears_on_a_new_choice():
    app = SetupHarness()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("tab", "enter")
        await pilot.pause()
        error = app.screen.query_one("#setup-error", Static)
        assert error.display and "moonshot needs an API key" in str(error.render())
        assert app.results == [] and not user_config_path().exists()
        await pilot.press("shift+tab", "2")
        assert not error.display


async def test_china_platform_checkbox_and_enter_there_saves(tmp_path):
    app = SetupHarness()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("tab")
        await type_text(pilot, SECRET)
        await pilot.press("tab", "space")  # space toggles the checkbox...
        assert app.focused.id == "moonshot-cn" and app.focused.value
        await pilot.press("enter")  # ...and Enter still saves
        await pilot.pause()
    assert app.results == [SetupResult("moonshot-cn", user_config_path())]
    assert resolve_endpoint(load_settings(tmp_path, env={}), env={}).base_url == "https://api.moonshot.cn/v1"


async def test_the_configured_provider_is_chosen_at_first():
    app = SetupHarness(current_provider="openrouter")
    async with app.run_test(size=(80, 24)):
        assert visible_fields(app) == {"openrouter-key"}


async def test_local_checkpoint_folder(tmp_path):
    folder = tmp_path / "Kimi-K2"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "kimi_k2"}')
    app = SetupHarness()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4", "tab")
        await type_text(pilot, str(folder))
        await pilot.press("enter")
        await pilot.pause()
        # No tokenizer in the folder: said on the form, nothing saved, the user can fix it or pick another way.
        assert "tiktoken.model is missing" in rendered_text(app)
        assert isinstance(app.screen, SetupScreen)
        assert app.results == []
        (folder / "tiktoken.model").write_text("IQ== 0\n")
        (folder / "tokenizer_config.json").write_text("{}")
        await pilot.press("enter")
        await pilot.pause()
    assert [result.provider for result in app.results] == ["local"]
    assert load_settings(tmp_path, env={}).model_path == str(folder)


async def test_a_broken_config_file_is_reported_and_left_alone(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("provider = \n")
    app = SetupHarness(config_path=path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("tab")
        await type_text(pilot, SECRET)
        await pilot.press("enter")
        await pilot.pause()
        error = str(app.screen.query_one("#setup-error", Static).render())
        assert str(path) in error and "not valid TOML" in error
        assert SECRET not in rendered_text(app)
    assert app.results == []
    assert path.read_text() == "provider = \n"


def test_first_view_snapshot(snap_compare):
    # A path under the (per-test) home is shown as "~/...", so the snapshot is stable.
    app = SetupHarness(config_path=Path.home() / ".config" / "kimicode" / "config.toml")
    assert snap_compare(app, terminal_size=(80, 24))
