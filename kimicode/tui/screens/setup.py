"""First-run setup: choose how kimicode reaches the model and save it to the user config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Checkbox, Input, Label, RadioButton, RadioSet, Static

from kimicode.config import ConfigError, user_config_path
from kimicode.user_config import save_backend_choice


@dataclass(frozen=True, slots=True)
class SetupResult:
    provider: str  # as written to the config, e.g. "moonshot-cn"
    path: Path  # the config file written


@dataclass(frozen=True, slots=True)
class _Option:
    id: str  # the RadioButton's id and the suffix of its "fields-…" group
    title: str
    sentence: str


OPTIONS = (
    _Option("moonshot", "Moonshot", "a Kimi platform API key (MOONSHOT_API_KEY)"),
    _Option("openrouter", "OpenRouter", "an OpenRouter API key (OPENROUTER_API_KEY)"),
    _Option("custom", "Custom URL", "vLLM, SGLang or a proxy at your URL; key optional"),
    _Option("local", "Local engine", "a checkpoint folder on this machine (air-gapped)"),
)


class BackendChoice(RadioSet):
    """A RadioSet where the arrow keys choose (not just highlight) and Enter moves on."""

    BINDINGS = [
        Binding("down,right", "step(1)", "Next option", show=False),
        Binding("up,left", "step(-1)", "Previous option", show=False),
        Binding("enter", "app.focus_next", "Next field", show=False),
    ]

    def action_step(self, direction: int) -> None:
        if direction > 0:
            self.action_next_button()
        else:
            self.action_previous_button()
        self.action_toggle_button()


class SpaceCheckbox(Checkbox, inherit_bindings=False):
    """Toggles with space only, so Enter still saves the form."""

    BINDINGS = [Binding("space", "toggle_button", "Toggle", show=False)]


class SetupScreen(Screen[SetupResult | None]):
    """Dismisses with a SetupResult once a choice is saved, or None if the user quits."""

    AUTO_FOCUS = "#backend"

    BINDINGS = [
        # ctrl+q is the App's own priority binding, which no screen can pre-empt: the app
        # forwards it to action_cancel while this screen is shown.
        Binding("escape", "cancel", "Quit setup"),
        Binding("enter", "save", "Save", show=False),  # from the checkbox; inputs submit themselves
        *(Binding(str(n), f"choose({n})", show=False) for n in range(1, len(OPTIONS) + 1)),
    ]

    def __init__(self, reason: str, config_path: Path | None = None, *, current_provider: str | None = None) -> None:
        """`reason`: why setup is shown (e.g. the MissingCredentials message).
        `current_provider`: the configured provider, chosen at first."""
        super().__init__()
        self._reason = reason
        self._config_path = config_path or user_config_path()
        self._initial = current_provider or "moonshot"

    def compose(self) -> ComposeResult:
        # Not a Tab stop itself: focusing a field scrolls it into view.
        with VerticalScroll(id="setup-form", can_focus=False):
            yield Static("Set up kimicode", id="setup-title")
            yield Static(self._reason, id="setup-reason", markup=False)
            yield Static("How should kimicode reach the model?", id="setup-question")
            with BackendChoice(id="backend"):
                for number, option in enumerate(OPTIONS, 1):
                    yield RadioButton(f"{number} [b]{option.title:<13}[/b]{option.sentence}", id=option.id)
            with Vertical(id="fields-moonshot", classes="fields"):
                yield _field("API key", Input(password=True, placeholder="sk-…", id="moonshot-key"))
                yield SpaceCheckbox(
                    "China platform (platform.moonshot.cn)",
                    value=self._initial == "moonshot-cn",
                    id="moonshot-cn",
                )
            with Vertical(id="fields-openrouter", classes="fields"):
                yield _field("API key", Input(password=True, placeholder="sk-or-…", id="openrouter-key"))
            with Vertical(id="fields-custom", classes="fields"):
                yield _field("Server URL", Input(placeholder="http://localhost:8000/v1", id="custom-url"))
                yield _field("API key", Input(password=True, placeholder="optional", id="custom-key"))
                yield _field("Model", Input(placeholder="the model id it serves", id="custom-model"))
            with Vertical(id="fields-local", classes="fields"):
                yield _field("Folder", Input(placeholder="/models/Kimi-K2-Instruct", id="local-folder"))
            yield Static(id="setup-error", markup=False)
            yield Static("↑↓ or 1-4 choose · Tab next field · Enter save · Esc quit", id="setup-keys")
            saved_to = f"Saved to {_home_relative(self._config_path)}, readable only by you."
            yield Static(saved_to, id="setup-path", markup=False)

    def on_mount(self) -> None:
        initial = "moonshot" if self._initial == "moonshot-cn" else self._initial
        if initial not in {option.id for option in OPTIONS}:
            initial = "moonshot"
        self.query_one(f"#{initial}", RadioButton).value = True  # posts Changed: shows its fields

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        chosen = event.pressed.id
        for option in OPTIONS:
            self.query_one(f"#fields-{option.id}").set_class(option.id == chosen, "-active")
        self._show_error("")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_save()

    def action_choose(self, number: int) -> None:
        self.query_one(f"#{OPTIONS[number - 1].id}", RadioButton).value = True
        self.query_one(BackendChoice).focus()  # the focused field may just have been hidden

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_save(self) -> None:
        provider, values = self._form_values()
        try:
            path = save_backend_choice(provider, path=self._config_path, **values)
        except ConfigError as exc:  # messages never contain the key (see user_config)
            self._show_error(str(exc))
            return
        self.dismiss(SetupResult(provider, path))

    def _form_values(self) -> tuple[str, dict[str, str | None]]:
        def value(input_id: str) -> str:
            return self.query_one(f"#{input_id}", Input).value

        chosen = self.query_one(BackendChoice).pressed_button
        match chosen.id if chosen else "moonshot":
            case "openrouter":
                return "openrouter", {"api_key": value("openrouter-key")}
            case "custom":
                return "custom", {
                    "base_url": value("custom-url"),
                    "api_key": value("custom-key") or None,
                    "model": value("custom-model"),
                }
            case "local":
                return "local", {"model_path": value("local-folder")}
            case _:
                china = self.query_one("#moonshot-cn", Checkbox).value
                return ("moonshot-cn" if china else "moonshot"), {"api_key": value("moonshot-key")}

    def _show_error(self, message: str) -> None:
        error = self.query_one("#setup-error", Static)
        error.update(message)
        error.set_class(bool(message), "-shown")
        if message:
            error.scroll_visible()


def _field(label: str, field: Input) -> Horizontal:
    return Horizontal(Label(label, classes="field-label"), field, classes="field")


def _home_relative(path: Path) -> str:
    try:
        return f"~/{path.relative_to(Path.home())}"
    except ValueError:
        return str(path)
