"""Test runners: find a project's test command, narrow it to changed files, and turn
what it printed into the short report the model reads to fix failures.

- `detect_test_command(root)` looks at the workspace's files (a configured command
  wins) and returns a `TestCommand`; `TestCommand.narrowed(paths)` runs only the
  tests relevant to the files the model changed, where the framework allows it.
- `parse_test_output(framework, output, exit_code)` returns a `TestOutcome`: counts
  and failing tests (name, location, message, project-only traceback excerpt), with
  one parser per framework and a fallback that keeps the last lines of output.
  `TestOutcome.summary()` is the text fed back to the model.

Parsing is best effort: whatever a parser misses, the exit code still decides whether
the run passed, and the output's last lines stand in for failures it could not name.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import textwrap
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

MESSAGE_LINES = 15  # per failure: enough for an assertion diff, not a log dump
LINE_WIDTH = 300
TRACEBACK_FRAMES = 3
TAIL_LINES = 40  # shown when no failure could be parsed

# Frames in these are not the project's code: installed packages, the language's own
# library, toolchains. Tracebacks shown to the model skip them.
_LIBRARY_PATH = re.compile(
    r"site-packages|dist-packages|node_modules|/lib/python\d|<frozen |^node:|^internal/"
    r"|^/rustc/|/\.cargo/registry/|/\.rustup/|(?:^|/)go[\d.-]*/src/|/pkg/mod/"
)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_SHELL_TIMEOUT = re.compile(r"^\[timed out after [\d.]+ s\b", re.M)  # the shell tool's footer
_CRASH = re.compile(r"^.*(?:Fatal Python error|Segmentation fault|core dumped).*$", re.M)


# ---------------------------------------------------------------------------
# Finding the test command


@dataclass(frozen=True, slots=True)
class TestCommand:
    """A shell command line that runs the project's tests from the workspace root."""

    __test__ = False  # not a pytest test class, despite the name

    command: str  # e.g. "python -m pytest -q"
    framework: str  # pytest | unittest | jest | vitest | npm | cargo | go | make | custom
    source: str  # why we think so, e.g. "pytest.ini" or "config test_command"
    root: Path = Path(".")  # the workspace root; narrowing checks which files exist there

    def narrowed(self, paths: list[str]) -> str | None:
        """A command running only the tests relevant to these changed files (relative
        to the workspace root, or absolute inside it), or None when the framework can't
        narrow or no relevant tests were found: then run the whole command."""
        relative = [p for p in (_relative_path(self.root, path) for path in paths) if p]
        narrow = _NARROWERS.get(self.framework)
        return narrow(self, relative) if narrow and relative else None


def detect_test_command(root: Path, configured: str | None = None) -> TestCommand | None:
    """The project's test command: the configured one, else the first ecosystem whose
    files show tests (pytest, package.json, Cargo, Go, a Makefile), else None."""
    root = Path(root)
    if configured and configured.strip():
        command = configured.strip()
        return TestCommand(command, _guess_framework(command, root), "config test_command", root)
    for detect in (_detect_pytest, _detect_package_json, _detect_cargo, _detect_go, _detect_make):
        if found := detect(root):
            return found
    return None


def _guess_framework(command: str, root: Path) -> str:
    framework = next((name for name, pattern in _COMMAND_HINTS if re.search(pattern, command)), "custom")
    if framework == "npm":  # the script says which runner the package manager starts
        package = _read_json(root / "package.json")
        return _js_framework(_test_script(package) or "", package)
    return framework


_COMMAND_HINTS = [  # the first match wins: vitest before jest, runners before wrappers
    ("pytest", r"\bpy\.?test\b"),
    ("unittest", r"\bunittest\b"),
    ("vitest", r"\bvitest\b"),
    ("jest", r"\bjest\b"),
    ("cargo", r"\bcargo\s+test\b"),
    ("go", r"\bgo\s+test\b"),
    ("npm", r"^\s*(?:npm|pnpm|yarn)\b.*\btest\b"),
    ("make", r"^\s*make\b"),
]


def _detect_pytest(root: Path) -> TestCommand | None:
    source = _pytest_evidence(root)
    if source is None:
        return None
    # The workspace's own virtualenv has the project and pytest installed; a bare
    # `python` may not.
    python = ".venv/bin/python" if (root / ".venv/bin/python").exists() else "python"
    if python == "python" and not shutil.which("python") and shutil.which("python3"):
        python = "python3"
    return TestCommand(f"{python} -m pytest -q", "pytest", source, root)


def _pytest_evidence(root: Path) -> str | None:
    pyproject = _read_toml(root / "pyproject.toml")
    pytest_table = _table(_table(pyproject, "tool"), "pytest")
    if "ini_options" in pytest_table:
        return "pyproject.toml [tool.pytest.ini_options]"
    if pytest_table:  # pytest 9's native TOML configuration
        return "pyproject.toml [tool.pytest]"
    if any(re.match(r"\s*pytest\b", dep, re.I) for dep in _python_dependencies(pyproject)):
        return "pytest in pyproject.toml dependencies"
    if (root / "pytest.ini").is_file():
        return "pytest.ini"
    if _has_ini_section(root / "setup.cfg", "tool:pytest"):
        return "setup.cfg [tool:pytest]"
    if _has_ini_section(root / "tox.ini", "pytest"):
        return "tox.ini [pytest]"
    if (root / "conftest.py").is_file():
        return "conftest.py"
    for folder in ("tests", "test"):
        if (root / folder).is_dir() and next((root / folder).rglob("test_*.py"), None):
            return f"{folder}/test_*.py"
    return None


def _python_dependencies(pyproject: dict[str, Any]) -> list[str]:
    """Requirement strings (or Poetry names) from every place pyproject.toml lists them."""
    project = _table(pyproject, "project")
    groups = [project.get("dependencies"), *_table(project, "optional-dependencies").values()]
    groups += _table(pyproject, "dependency-groups").values()
    poetry = _table(_table(pyproject, "tool"), "poetry")
    groups += [list(_table(poetry, "dependencies")), list(_table(poetry, "dev-dependencies"))]
    groups += [list(_table(group, "dependencies")) for group in _table(poetry, "group").values()]
    return [dep for group in groups if isinstance(group, list) for dep in group if isinstance(dep, str)]


def _detect_package_json(root: Path) -> TestCommand | None:
    package = _read_json(root / "package.json")
    script = _test_script(package)
    if script is None:
        return None
    manager = "pnpm" if (root / "pnpm-lock.yaml").exists() else "yarn" if (root / "yarn.lock").exists() else "npm"
    command = {"npm": "npm test --silent", "pnpm": "pnpm test", "yarn": "yarn test"}[manager]
    return TestCommand(command, _js_framework(script, package), f'package.json scripts.test "{script}"', root)


def _test_script(package: dict[str, Any]) -> str | None:
    """scripts.test, unless it is missing or `npm init`'s placeholder that always fails."""
    script = _table(package, "scripts").get("test")
    if not isinstance(script, str) or not script.strip() or "no test specified" in script:
        return None
    return script


def _js_framework(script: str, package: dict[str, Any]) -> str:
    if re.search(r"\bvitest\b", script):
        return "vitest"
    if re.search(r"\bjest\b|react-scripts test", script):
        return "jest"
    # A script that delegates (`npm run test:unit`, a shell script) hides the runner;
    # the installed one tells it.
    dependencies = {**_table(package, "dependencies"), **_table(package, "devDependencies")}
    for runner in ("vitest", "jest"):
        if runner in dependencies:
            return runner
    return "npm"


def _detect_cargo(root: Path) -> TestCommand | None:
    return TestCommand("cargo test", "cargo", "Cargo.toml", root) if (root / "Cargo.toml").is_file() else None


def _detect_go(root: Path) -> TestCommand | None:
    return TestCommand("go test ./...", "go", "go.mod", root) if (root / "go.mod").is_file() else None


def _detect_make(root: Path) -> TestCommand | None:
    for name in ("GNUmakefile", "makefile", "Makefile"):  # the order make itself looks in
        path = root / name
        if path.is_file():
            if re.search(r"^test\s*:(?!=)", _read_text(path), re.M):  # a target, not `test := ...`
                return TestCommand("make test", "make", f"{name} test target", root)
            return None
    return None


# ---------------------------------------------------------------------------
# Narrowing a command to changed files


def _narrow_pytest(test: TestCommand, paths: list[str]) -> str | None:
    if any(PurePosixPath(path).name == "conftest.py" for path in paths):
        return None  # fixtures changed: any test may be affected
    found: list[str] = []
    for path in paths:
        for candidate in _pytest_files_for(path):
            if candidate not in found and (test.root / candidate).is_file():
                found.append(candidate)
    return f"{test.command} {_quoted(found)}" if found else None


def _pytest_files_for(path: str) -> list[str]:
    """The path itself for a test file; for a module `pkg/sub/mod.py`, the test files
    that conventionally cover it: beside it, or under tests/ mirroring its folders
    (tests/pkg/sub/, tests/sub/, tests/)."""
    file = PurePosixPath(path)
    if file.suffix != ".py":
        return []
    if file.name.startswith("test_") or file.stem.endswith("_test"):
        return [path]
    name = f"test_{file.stem}.py"
    folders = file.parent.parts
    candidates = [file.parent / name]
    candidates += [PurePosixPath("tests", *folders[i:], name) for i in range(len(folders) + 1)]
    return [candidate.as_posix() for candidate in candidates]


_JS_SOURCE = (".js", ".jsx", ".mjs", ".cjs", ".ts", ".tsx", ".mts", ".cts", ".vue", ".svelte")


def _narrow_jest(test: TestCommand, paths: list[str]) -> str | None:
    sources = [path for path in paths if path.endswith(_JS_SOURCE)]
    if not sources:
        return None
    # Extra arguments reach the script's jest; npm forwards only those after "--".
    separator = " --" if re.match(r"\s*npm\s", test.command) else ""
    return f"{test.command}{separator} --findRelatedTests {_quoted(sources)}"


def _narrow_vitest(test: TestCommand, paths: list[str]) -> str | None:
    sources = [path for path in paths if path.endswith(_JS_SOURCE)]
    if not sources:
        return None
    # `vitest related` is a subcommand of its own, so it can't be appended to a
    # script running `vitest run`: call the binary through the package manager.
    runner = test.command.split()[0] if test.command.split() else ""
    execute = {"pnpm": "pnpm exec", "yarn": "yarn", "bun": "bunx"}.get(runner, "npx")
    return f"{execute} vitest related --run {_quoted(sources)}"


def _narrow_go(test: TestCommand, paths: list[str]) -> str | None:
    folders = sorted({PurePosixPath(path).parent.as_posix() for path in paths if path.endswith(".go")})
    packages = ["./..." if folder == "." else f"./{folder}/..." for folder in folders if (test.root / folder).is_dir()]
    if not packages:
        return None
    words = test.command.split()
    if "./..." in words:  # keep the command's flags, swap the package pattern
        index = words.index("./...")
        return " ".join(words[:index] + packages + words[index + 1 :])
    return f"{test.command} {' '.join(packages)}"


def _narrow_cargo(test: TestCommand, paths: list[str]) -> str | None:
    if "workspace" not in _read_toml(test.root / "Cargo.toml"):
        return None  # a single crate: the full run is already the narrow one
    crates: list[str] = []
    for path in paths:
        if not path.endswith((".rs", "Cargo.toml")):
            continue
        crate = _owning_crate(test.root, path)
        if crate is None:
            return None  # the root package or shared code changed: test everything
        if crate not in crates:
            crates.append(crate)
    if not crates:
        return None
    head, separator, tail = test.command.partition(" -- ")  # flags go before the test binary's
    return f"{head} {' '.join(f'-p {shlex.quote(crate)}' for crate in crates)}{separator}{tail}"


def _owning_crate(root: Path, path: str) -> str | None:
    """The package name of the nearest Cargo.toml above `path`, below the root."""
    folder = (root / path).parent
    while folder != root and root in folder.parents:
        name = _table(_read_toml(folder / "Cargo.toml"), "package").get("name")
        if isinstance(name, str):
            return name
        folder = folder.parent
    return None


_NARROWERS: dict[str, Callable[[TestCommand, list[str]], str | None]] = {
    "pytest": _narrow_pytest,
    "jest": _narrow_jest,
    "vitest": _narrow_vitest,
    "go": _narrow_go,
    "cargo": _narrow_cargo,
}


def _relative_path(root: Path, path: str) -> str | None:
    candidate = Path(path)
    if candidate.is_absolute():
        try:
            candidate = candidate.resolve().relative_to(root.resolve())
        except ValueError:
            return None  # outside the workspace
    if ".." in candidate.parts:
        return None
    text = candidate.as_posix()
    return None if text == "." else text


def _quoted(paths: list[str]) -> str:
    return " ".join(shlex.quote(path) for path in paths)


# ---------------------------------------------------------------------------
# Outcomes and the summary the model reads


@dataclass(frozen=True, slots=True)
class TestFailure:
    __test__ = False

    name: str  # e.g. "tests/test_app.py::test_parse"
    message: str  # the assertion / error line(s), short
    location: str  # "tests/test_app.py:42" when known, else ""
    traceback: str = ""  # the last frames in project files, one per line


@dataclass(frozen=True, slots=True)
class TestOutcome:
    __test__ = False

    passed: bool  # exit code 0, no failures parsed, not timed out
    exit_code: int
    counts: dict[str, int]  # e.g. {"passed": 10, "failed": 2, "errors": 0, "skipped": 1}
    failures: list[TestFailure]
    note: str = ""  # timed out, crashed, build failed, no tests ran...
    output_tail: str = ""  # the last lines printed, shown when no failure was parsed

    def summary(self, max_chars: int = 4000) -> str:
        """What the model reads: a line with the counts, then every failing test with
        its location, message and traceback excerpt, within `max_chars`. Details are
        trimmed first, so that every failing test stays named; what was cut is said."""
        counts = _format_counts(self.counts)
        outcome = "Tests passed" if self.passed else f"Tests failed (exit code {self.exit_code})"
        head = f"{outcome}: {counts}." if counts else f"{outcome}."
        if self.passed:
            return _fit(head, max_chars)
        if self.note:
            head += "\n" + self.note
        if not self.failures:
            return _fit_tail(
                f"{head}\nNo failing test could be identified; the last lines of output:", self.output_tail, max_chars
            )
        return _fit_failures(head, [_failure_lines(failure) for failure in self.failures], max_chars)


_COUNT_ORDER = ("failed", "errors", "passed", "skipped")


def _format_counts(counts: dict[str, int]) -> str:
    keys = [key for key in _COUNT_ORDER if key in counts] + sorted(set(counts) - set(_COUNT_ORDER))
    shown = [f"{counts[key]} {key}" for key in keys if counts[key]]
    return ", ".join(shown) or ", ".join(f"{counts[key]} {key}" for key in keys)


def _failure_lines(failure: TestFailure) -> list[str]:
    lines = [f"FAIL {failure.name}" + (f" at {failure.location}" if failure.location else "")]
    lines += [f"    {line}" for line in failure.message.splitlines()]
    lines += [f"  at {line}" for line in failure.traceback.splitlines()]  # project frames, outermost first
    return lines


_CUT_NOTE_RESERVE = 120  # room kept for the note saying what was cut


def _fit_failures(head: str, blocks: list[list[str]], max_chars: int) -> str:
    """Each block's first line names the test and the second starts its message. A
    block gets the room left once every later test's first two lines (or, short of
    room, its name line) are set aside, so details shrink before names go."""
    left = max_chars - len(head) - 1 - _CUT_NOTE_RESERVE
    brief_costs = [_cost(block[:2]) for block in blocks]
    reserve = brief_costs if sum(brief_costs) <= left else [_cost(block[:1]) for block in blocks]
    out: list[str] = []
    trimmed = unlisted = 0
    for index, block in enumerate(blocks):
        taken = _take_lines(block, left - sum(reserve[index + 1 :])) or _take_lines(block[:1], left)
        if not taken:
            unlisted = len(blocks) - index
            break
        trimmed += len(taken) < len(block)
        while not taken[-1].strip():  # a cut can end on a blank line inside a diff
            taken.pop()
        out += taken
        left -= _cost(taken)
    cuts = []
    if trimmed:
        cuts.append(f"details of {trimmed} failing test{'s' * (trimmed > 1)} trimmed")
    if unlisted:
        cuts.append(f"{unlisted} more failing test{'s' * (unlisted > 1)} not listed")
    if cuts:
        out.append(f"[summary capped at {max_chars} characters: {'; '.join(cuts)}]")
    return _fit("\n".join([head, *out]), max_chars)


def _cost(lines: list[str]) -> int:
    return sum(len(line) + 1 for line in lines)


def _fit_tail(head: str, tail: str, max_chars: int) -> str:
    """The head, then as many of the tail's last lines as fit."""
    kept = _take_lines(tail.splitlines()[::-1], max_chars - len(head) - 1)[::-1]
    return _fit("\n".join([head, *kept]), max_chars)


def _take_lines(lines: list[str], room: int) -> list[str]:
    taken: list[str] = []
    for line in lines:
        if len(line) + 1 > room:
            break
        taken.append(line)
        room -= len(line) + 1
    return taken


def _fit(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max(max_chars - 1, 0)] + "…"


# ---------------------------------------------------------------------------
# Parsing


@dataclass(slots=True)
class _Parsed:
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[TestFailure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def parse_test_output(framework: str, output: str, exit_code: int, *, timed_out: bool = False) -> TestOutcome:
    """Counts and failing tests from a run's combined stdout and stderr. An unknown
    framework ("npm", "make", "custom") is recognised by its output where possible.
    `timed_out` is for callers that stopped the run; a negative exit code means it
    was killed by that signal."""
    text = _ANSI.sub("", output).replace("\r\n", "\n")
    timed_out = timed_out or bool(_SHELL_TIMEOUT.search(text))
    parser = _PARSERS.get(framework) or _recognise(text)
    parsed = parser(text) if parser else _Parsed()
    notes = _run_notes(text, exit_code, timed_out) + parsed.notes
    return TestOutcome(
        passed=exit_code == 0 and not parsed.failures and not timed_out,
        exit_code=exit_code,
        counts=parsed.counts,
        failures=parsed.failures,
        note=" ".join(notes),
        output_tail="\n".join(text.rstrip().splitlines()[-TAIL_LINES:]),
    )


def _run_notes(text: str, exit_code: int, timed_out: bool) -> list[str]:
    notes = []
    if timed_out:
        notes.append("The test run timed out and was stopped, so its results are incomplete.")
    elif exit_code < 0:
        notes.append(f"The test run was killed by {_signal_name(-exit_code)}: it crashed or was stopped.")
    elif exit_code > 128 and (name := _signal_name(exit_code - 128)).startswith("SIG"):
        notes.append(
            f"Exit code {exit_code}: the test process was probably killed by {name} (a crash or out of memory)."
        )
    if crash := _CRASH.search(text):
        notes.append(f"The test process crashed: {crash.group().strip()[:LINE_WIDTH]}")
    return notes


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# Frames are (path, line, code or function): formatted, filtered and picked alike for
# every language.
_Frame = tuple[str, str, str]


def _project_frames(frames: list[_Frame]) -> list[_Frame]:
    return [frame for frame in frames if not _LIBRARY_PATH.search(frame[0])]


def _format_frames(frames: list[_Frame]) -> str:
    """One line per frame, outermost first as in Python tracebacks."""
    return "\n".join(f"{path}:{line}: {code}" if code else f"{path}:{line}" for path, line, code in frames)


def _location(frames: list[_Frame], test_file: str = "") -> str:
    """Where the test failed: its own file's last frame, else the last project frame."""
    own = [frame for frame in frames if test_file and frame[0].endswith(test_file)]
    chosen = (own or frames)[-1:] if frames else []
    return f"{chosen[0][0]}:{chosen[0][1]}" if chosen else ""


def _clip(lines: list[str], max_lines: int = MESSAGE_LINES) -> str:
    """Dedented, without blank edges, at most `max_lines` lines of LINE_WIDTH."""
    text = textwrap.dedent("\n".join(line.rstrip() for line in lines)).strip("\n")
    kept = [line if len(line) <= LINE_WIDTH else line[: LINE_WIDTH - 1] + "…" for line in text.splitlines()]
    if len(kept) > max_lines:
        kept = kept[:max_lines] + [f"… ({len(kept) - max_lines} more lines)"]
    return "\n".join(kept)


def _counts(pairs: list[tuple[str, str]], aliases: dict[str, str] | None = None) -> dict[str, int]:
    """{"passed": 0, "failed": 0, "errors": 0, "skipped": 0} updated with `(number, word)`
    pairs, words renamed by `aliases` and repeated words added up."""
    counts = dict.fromkeys(("passed", "failed", "errors", "skipped"), 0)
    for number, word in pairs:
        key = (aliases or {}).get(word, word)
        counts[key] = counts.get(key, 0) + int(number)
    return counts


# --- pytest

_PYTEST_BANNER = re.compile(r"^={3,} ?(.*?) ?={3,}$")  # ===== FAILURES =====
_PYTEST_SECTION = re.compile(r"^_{3,} (.+?) _{3,}$")  # _____ test_name _____
_PYTEST_SHORT = re.compile(r"^(FAILED|ERROR) (\S.*?)(?: - (.*))?$")
_PYTEST_FINAL = re.compile(r"(?:no tests ran|\d+ \w+(?:, \d+ \w+)*) in [\d.]+s(?: \(.*\))?")
_PYTEST_CAPTURED = re.compile(r"^-{3,} Captured .* -{3,}$")
_PY_FRAME = re.compile(r"^([^\s:][^:]*\.py):(\d+):(?: (.*))?$")
_PYTEST_ALIASES = {"error": "errors", "warning": "warnings"}


def _parse_pytest(text: str) -> _Parsed:
    lines = text.splitlines()
    parsed = _Parsed()
    regions = _pytest_regions(lines)
    short = [m.groups() for line in regions.get("short test summary info", []) if (m := _PYTEST_SHORT.match(line))]
    sections = _pytest_sections(regions)
    used: set[int] = set()
    for kind, nodeid, short_message in short:
        index = _match_section(sections, kind, nodeid, used)
        detail = sections[index][2] if index is not None else None
        parsed.failures.append(_pytest_failure(nodeid, detail, short_message or ""))
    for index, (_, name, detail) in enumerate(sections):
        if index not in used:  # no short summary line (e.g. -rN): the section is all we have
            parsed.failures.append(_pytest_failure(_section_nodeid(name), detail, ""))
    for line in reversed(lines):
        if _PYTEST_FINAL.fullmatch(line.strip("= ")):
            parsed.counts = _counts(re.findall(r"(\d+) (\w+)", line), _PYTEST_ALIASES)
            ran = ("passed", "failed", "errors", "skipped", "xfailed", "xpassed")
            if not any(parsed.counts.get(key) for key in ran):  # e.g. all deselected: exit code 5
                parsed.notes.append("No tests ran.")
            break
    for line in lines:
        if line.startswith("!") and "Interrupted" in line:  # e.g. collection errors stop the run
            parsed.notes.append(line.strip("! ") + ".")
        elif line.startswith("INTERNALERROR>"):
            parsed.notes.append("pytest hit an internal error (INTERNALERROR); see the output.")
            break
    return parsed


def _pytest_regions(lines: list[str]) -> dict[str, list[str]]:
    """The lines under each `==== title ====` banner (FAILURES, short test summary info...)."""
    regions: dict[str, list[str]] = {}
    current = regions.setdefault("", [])
    for line in lines:
        if banner := _PYTEST_BANNER.match(line):
            current = regions.setdefault(banner.group(1), [])
        else:
            current.append(line)
    return regions


def _pytest_sections(regions: dict[str, list[str]]) -> list[tuple[str, str, list[str]]]:
    """(kind, title, lines) for each `____ title ____` section under ERRORS and FAILURES."""
    sections: list[tuple[str, str, list[str]]] = []
    for kind, banner in (("ERROR", "ERRORS"), ("FAILED", "FAILURES")):
        for line in regions.get(banner, []):
            if section := _PYTEST_SECTION.match(line):
                sections.append((kind, section.group(1), []))
            elif sections and sections[-1][0] == kind:
                sections[-1][2].append(line)
    return sections


def _section_nodeid(name: str) -> str:
    """The node id tail that a section title stands for: "ERROR at setup of test_x" is
    test_x, "ERROR collecting tests/a.py" is the file, "TestA.test_b" is TestA::test_b."""
    if name.startswith("ERROR collecting "):
        return name.removeprefix("ERROR collecting ")
    name = re.sub(r"^ERROR at (?:setup|teardown) of ", "", name)
    function, bracket, params = name.partition("[")  # parameter ids may contain dots
    return function.replace(".", "::") + bracket + params


def _match_section(sections: list[tuple[str, str, list[str]]], kind: str, nodeid: str, used: set[int]) -> int | None:
    for index, (section_kind, name, _) in enumerate(sections):
        key = _section_nodeid(name)
        if index not in used and section_kind == kind and (nodeid == key or nodeid.endswith("::" + key)):
            used.add(index)
            return index
    return None


def _pytest_failure(nodeid: str, section: list[str] | None, short_message: str) -> TestFailure:
    if section is None:
        return TestFailure(nodeid, short_message, "")
    frames, error_lines, exception = _pytest_frames(section)
    message = _clip([line[1:] for line in error_lines]) or exception or short_message
    project = _project_frames(frames)
    test_file = nodeid.split("::")[0]
    return TestFailure(nodeid, message, _location(project, test_file), _format_frames(project[-TRACEBACK_FRAMES:]))


def _pytest_frames(section: list[str]) -> tuple[list[_Frame], list[str], str]:
    """Frames, the `E   ` lines and the exception type from one failure section, in
    pytest's long style (`>` marks the code, then `path:line: Exception`) or short
    style (`path:line: in function`, then the code)."""
    frames: list[_Frame] = []
    error_lines: list[str] = []
    marked = exception = ""
    code_follows = False
    for line in section:
        if _PYTEST_CAPTURED.match(line):
            break  # captured output, not the failure
        if frame := _PY_FRAME.match(line):
            path, number, rest = frame.group(1), frame.group(2), frame.group(3) or ""
            code_follows = rest.startswith("in ")
            frames.append((path, number, "" if code_follows else marked))
            exception = exception if code_follows or not rest else rest
            marked = ""
        elif code_follows and line.startswith("    ") and line.strip():
            frames[-1] = (*frames[-1][:2], line.strip())
            code_follows = False
        elif line.startswith(">"):
            marked = line[1:].strip()
        elif line.startswith("E ") or line == "E":
            error_lines.append(line)
    return frames, error_lines, exception


# --- unittest

_UNITTEST_RULE = re.compile(r"^(?:={70}|-{70})$")
_UNITTEST_HEADER = re.compile(r"^(FAIL|ERROR|UNEXPECTED SUCCESS): (\S+) \(([^)]*)\)(.*)$")
_PY_TRACEBACK_FRAME = re.compile(r'^\s*File "(.+)", line (\d+), in (.+)$')
_UNITTEST_ALIASES = {"failures": "failed", "expected failures": "xfailed", "unexpected successes": "xpassed"}


def _parse_unittest(text: str) -> _Parsed:
    lines = text.splitlines()
    parsed = _Parsed()
    for index, line in enumerate(lines):
        header = _UNITTEST_HEADER.match(line)
        if header and index and _UNITTEST_RULE.match(lines[index - 1]):
            body = _until(lines[index + 2 :], _UNITTEST_RULE.match)
            parsed.failures.append(_unittest_failure(header, body))
    ran = re.search(r"^Ran (\d+) tests? in ", text, re.M)
    result = re.search(r"^(?:OK|FAILED)(?: \((.*)\))?$", text, re.M)
    if ran:
        pairs = [(n, w.strip()) for w, n in re.findall(r"([a-z ]+)=(\d+)", result.group(1) or "")] if result else []
        counts = _counts(pairs, _UNITTEST_ALIASES)
        counts["passed"] = int(ran.group(1)) - sum(counts.values())
        parsed.counts = counts
    if re.search(r"^NO TESTS RAN$", text, re.M):
        parsed.notes.append("No tests ran.")
    return parsed


def _unittest_failure(header: re.Match[str], body: list[str]) -> TestFailure:
    method, test_id, extra = header.group(2), header.group(3), header.group(4).strip()
    # Python 3.11 prints the full id in the parentheses; older versions the class.
    name = test_id if test_id.endswith("." + method) else f"{test_id}.{method}"
    frames: list[_Frame] = []
    in_test: list[_Frame] = []  # frames of the test method itself
    message_start = 0
    for index, line in enumerate(body):
        if frame := _PY_TRACEBACK_FRAME.match(line):
            code = body[index + 1].strip() if index + 1 < len(body) and body[index + 1].startswith("    ") else ""
            frames.append((frame.group(1), frame.group(2), code))
            if frame.group(3) == method:
                in_test.append(frames[-1])
            message_start = index + 1
        elif frames and index == message_start and line.startswith("    "):
            message_start = index + 1  # the frame's code and ^^^ markers
    message = _clip(body[message_start:] if frames else body)
    project = _project_frames(frames)
    location = _location(_project_frames(in_test) or project)
    return TestFailure(f"{name} {extra}".strip(), message, location, _format_frames(project[-TRACEBACK_FRAMES:]))


def _until(lines: list[str], stop: Callable[[str], object]) -> list[str]:
    for index, line in enumerate(lines):
        if stop(line):
            return lines[:index]
    return lines


# --- jest

_JEST_FILE = re.compile(r"^\s*(FAIL|PASS)\s+(\S+)")
_JEST_SECTION = re.compile(r"^\s*● (.+)$")
_JEST_SECTION_END = re.compile(r"^\s*(?:FAIL|PASS)\s|^Test Suites:|^Summary of all failing tests|^\s*● ")
_JS_AT_FRAME = re.compile(r"^\s*at (?:(.+?) \()?([^()\s]+?):(\d+):\d+\)?$")
_CODE_FRAME = re.compile(r"^\s*>?\s*\d+ ?\|")  # jest's "> 5 | code", vitest's "  5| code"


def _parse_jest(text: str) -> _Parsed:
    lines = text.splitlines()
    parsed = _Parsed()
    seen: set[str] = set()  # jest repeats failures under "Summary of all failing tests"
    test_file = ""
    suites_failed = 0
    for index, line in enumerate(lines):
        if file := _JEST_FILE.match(line):
            test_file = file.group(2)
        elif section := _JEST_SECTION.match(line):
            title = section.group(1).strip()
            name = f"{test_file} › {title}" if test_file else title
            if name in seen or title.startswith("Console"):
                continue
            seen.add(name)
            body = _until(lines[index + 1 :], _JEST_SECTION_END.match)
            parsed.failures.append(_js_failure(name, body, test_file))
            suites_failed += title == "Test suite failed to run"
    if not parsed.failures:  # a reporter without ● sections still marks failed tests
        parsed.failures = [
            TestFailure(m.group(1), "", "") for line in lines if (m := re.match(r"^\s*✕ (.+?)(?: \(\d+ m?s\))?$", line))
        ]
    if tests := re.search(r"^Tests:\s+(.*)$", text, re.M):
        parsed.counts = _counts(re.findall(r"(\d+) (\w+)", tests.group(1)))
        parsed.counts["errors"] = suites_failed
    return parsed


def _js_failure(name: str, body: list[str], test_file: str) -> TestFailure:
    """A jest or vitest failure: message lines until the code frame or stack, then
    frames as `at fn (path:line:col)` (jest) or `❯ fn path:line:col` (vitest)."""
    message: list[str] = []
    frames: list[_Frame] = []
    code = previous_code = ""
    for line in body:
        if frame := _JS_AT_FRAME.match(line) or _VITEST_FRAME.match(line):
            frames.append((frame.group(2), frame.group(3), ""))
        elif line.strip().startswith(">") and _CODE_FRAME.match(line):
            code = line.split("|", 1)[1].strip()  # jest marks the failing line with ">"
        elif re.match(r"^\s*\|\s*\^", line):
            code = code or previous_code  # vitest puts a caret under it instead
        elif _CODE_FRAME.match(line):
            previous_code = line.split("|", 1)[1].strip()
        elif not frames and not code and not previous_code:
            message.append(line)
    project = _project_frames(frames[::-1])  # JS stacks list the innermost frame first
    if project and code:  # the code frame shows the innermost project frame
        project[-1] = (*project[-1][:2], code)
    return TestFailure(name, _clip(message), _location(project, test_file), _format_frames(project[-TRACEBACK_FRAMES:]))


# --- vitest

_VITEST_HEADER = re.compile(r"^\s*FAIL\s+(.+?)\s*$")
_VITEST_FRAME = re.compile(r"^\s*❯ (?:(\S+) )?(\S+?):(\d+):\d+$")
_VITEST_SECTION_END = re.compile(r"^\s*⎯|^\s*FAIL\s|^\s*Test Files\s")


def _parse_vitest(text: str) -> _Parsed:
    lines = text.splitlines()
    parsed = _Parsed()
    pending: list[str] = []  # several FAIL headers may share one error
    suites_failed = 0
    for index, line in enumerate(lines):
        header = _VITEST_HEADER.match(line)
        if not header:
            continue
        title = header.group(1)
        suite = re.fullmatch(r"(\S+) \[ .* \]", title)  # "FAIL  file [ file ]": the file failed to load
        pending.append(f"{suite.group(1)} › suite failed to run" if suite else title)
        suites_failed += bool(suite)
        body = _until(lines[index + 1 :], _VITEST_SECTION_END.match)
        if not any(line.strip() for line in body):
            continue
        test_file = title.split(" > ")[0].split(" [")[0]
        parsed.failures += [_js_failure(name, body, test_file) for name in pending]
        pending = []
    parsed.failures += [TestFailure(name, "", "") for name in pending]
    if not parsed.failures:
        parsed.failures = [
            TestFailure(m.group(1), "", "") for line in lines if (m := re.match(r"^\s*[×✗] (.+?)(?: \d+ms)?$", line))
        ]
    if tests := re.search(r"^\s*Tests\s+(.*)$", text, re.M):
        parsed.counts = _counts(re.findall(r"(\d+) (failed|passed|skipped|todo)", tests.group(1)))
        parsed.counts["errors"] = suites_failed
    return parsed


# --- cargo test

_CARGO_SECTION = re.compile(r"^---- (.+?) stdout ----$")
_CARGO_SECTION_END = re.compile(r"^---- .+ stdout ----$|^failures:$|^test result: ")
_CARGO_RESULT = re.compile(r"^test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored")
_RUST_PANIC = re.compile(r"panicked at (?:'(.*)', )?(\S+?):(\d+):\d+:?$")
_RUST_FRAME_AT = re.compile(r"^\s+at (.+?):(\d+):\d+$")
_RUST_ERROR = re.compile(r"^error(?:\[E\d+\])?: (.+)$")
_CARGO_WRAP_UP = ("could not compile", "test failed", "aborting due to", "build failed")


def _parse_cargo(text: str) -> _Parsed:
    lines = text.splitlines()
    parsed = _Parsed()
    for index, line in enumerate(lines):
        if section := _CARGO_SECTION.match(line):
            body = _until(lines[index + 1 :], _CARGO_SECTION_END.match)
            parsed.failures.append(_cargo_failure(section.group(1), body))
    named = {failure.name for failure in parsed.failures}
    for line in lines:  # failures without output sections (e.g. a test that timed out)
        if (failed := re.match(r"^test (.+?) \.\.\. FAILED$", line)) and failed.group(1) not in named:
            parsed.failures.append(TestFailure(failed.group(1), "", ""))
        elif "has been running for over" in line:
            parsed.notes.append(line.strip() + ".")
    parsed.failures += _rust_build_errors(lines)
    results = [m.groups() for line in lines if (m := _CARGO_RESULT.match(line))]
    if results:
        words = ("passed", "failed", "skipped")  # cargo's "ignored" is skipped
        parsed.counts = _counts([(n, word) for groups in results for n, word in zip(groups, words, strict=True)])
    if any("could not compile" in line for line in lines):
        parsed.notes.append("The build failed, so the tests did not run.")
    return parsed


def _cargo_failure(name: str, body: list[str]) -> TestFailure:
    message: list[str] = []
    location = ""
    frames: list[_Frame] = []
    in_message = False
    for index, line in enumerate(body):
        if panic := _RUST_PANIC.search(line):
            location = f"{panic.group(2)}:{panic.group(3)}"
            message = [panic.group(1)] if panic.group(1) is not None else []
            in_message = panic.group(1) is None  # new style: the message is on the next lines
        elif line.startswith(("stack backtrace:", "note: ")):
            in_message = False
        elif at := _RUST_FRAME_AT.match(line):
            function = body[index - 1].split(": ", 1)[-1].strip() if index else ""
            frames.append((at.group(1).removeprefix("./"), at.group(2), function))
        elif in_message:
            message.append(line)
    if not location:  # no panic: e.g. a test returning Err prints "Error: ..."
        message = [line for line in body if line.strip()]
    unique: list[_Frame] = []
    for frame in _project_frames(frames):
        if all(frame[:2] != kept[:2] for kept in unique):  # a test's closure repeats its line
            unique.append(frame)
    unique.reverse()  # Rust backtraces list the innermost frame first
    return TestFailure(name, _clip(message), location, _format_frames(unique[-TRACEBACK_FRAMES:]))


def _rust_build_errors(lines: list[str]) -> list[TestFailure]:
    """rustc's `error[E…]: …` diagnostics, with their ` --> path:line:col` location."""
    errors: list[TestFailure] = []
    for index, line in enumerate(lines):
        error = _RUST_ERROR.match(line)
        if not error or error.group(1).startswith(_CARGO_WRAP_UP):
            continue
        body = _until(lines[index + 1 :], lambda text: not text.strip())
        arrow = next((m for text in body if (m := re.match(r"^\s*--> (.+?):(\d+):\d+$", text))), None)
        failure = TestFailure("(build)", _clip([line, *body], 8), f"{arrow.group(1)}:{arrow.group(2)}" if arrow else "")
        if failure not in errors:  # the same error is reported for each target built
            errors.append(failure)
    return errors


# --- go test

_GO_RESULT = re.compile(r"^\s*--- (FAIL|PASS|SKIP): (\S+) \(")
_GO_RUN = re.compile(r"^=== (?:RUN|CONT|PAUSE|NAME)\s+(\S+)")
_GO_LOG = re.compile(r"^\s+(\S+\.go):(\d+): (.*)$")
_GO_PACKAGE = re.compile(r"^(?:FAIL|ok)\s+(\S+)\s+(?:\[[^\]]+\]|[\d.]+s|\(cached\))")
_GO_BUILD_ERROR = re.compile(r"^(\S+\.go):(\d+):\d+: (.*)$")
_GO_TRACE_FRAME = re.compile(r"^\t(\S+\.go):(\d+)")


def _parse_go(text: str) -> _Parsed:
    """go test prints each package's output as a block ending with `ok pkg` or
    `FAIL pkg`: test names repeat across packages, so each block is parsed alone."""
    parsed = _Parsed(counts=dict.fromkeys(("failed", "errors"), 0))
    block: list[str] = []
    for line in text.splitlines():
        block.append(line)
        if package := _GO_PACKAGE.match(line):
            _parse_go_package(block, package.group(1), parsed)
            block = []
    if block:  # stopped before the package's result line, e.g. by a timeout
        _parse_go_package(block, "", parsed)
    return parsed


def _parse_go_package(lines: list[str], package: str, parsed: _Parsed) -> None:
    results: dict[str, str] = {}  # test -> FAIL | PASS | SKIP
    logs: dict[str, list[str]] = {}  # test -> its t.Log/t.Error lines, printed before (-v) or after its result
    traces: dict[str, list[str]] = {}  # test -> the goroutine dump after its panic
    current = ""
    continuing = False  # the previous line was a log message, which may go on over lines
    for line in lines:
        if current in traces:
            traces[current].append(line)
        elif run := _GO_RUN.match(line):
            current = run.group(1)
        elif result := _GO_RESULT.match(line):
            current = result.group(2)
            results[current] = result.group(1)
        elif (log := _GO_LOG.match(line)) and current:
            logs.setdefault(current, []).append(f"{log.group(1)}:{log.group(2)}: {log.group(3)}")
            continuing = True
            continue
        elif line.startswith("panic: ") and current:
            logs.setdefault(current, []).append(line.removesuffix(" [recovered]"))
            results[current] = "FAIL"
            traces[current] = []
        elif continuing and line.startswith((" ", "\t")) and line.strip():
            logs[current][-1] += "\n" + line.strip()
            continue
        continuing = False
    # A failed subtest fails its parent too; only the leaves say what went wrong.
    leaves = {
        test: result for test, result in results.items() if not any(other.startswith(test + "/") for other in results)
    }
    for test, result in leaves.items():
        if result == "FAIL":
            parsed.failures.append(_go_failure(test, package, logs.get(test, []), traces.get(test, [])))
    parsed.counts["failed"] += list(leaves.values()).count("FAIL")
    if any(_GO_RUN.match(line) for line in lines):  # -v: passes and skips are listed too
        for key, result in (("passed", "PASS"), ("skipped", "SKIP")):
            parsed.counts[key] = parsed.counts.get(key, 0) + list(leaves.values()).count(result)
    build_errors = _go_build_errors(lines)
    parsed.failures += build_errors
    parsed.counts["errors"] += len(build_errors)


def _go_failure(test: str, package: str, logs: list[str], trace: list[str]) -> TestFailure:
    # A goroutine dump lists the innermost call first: a function line, then its file.
    calls = [
        (m.group(1), m.group(2), trace[i - 1].split("(")[0])
        for i, line in enumerate(trace)
        if i and (m := _GO_TRACE_FRAME.match(line))
    ]
    frames = _project_frames(calls[::-1])
    first_log = next((m for log in logs if (m := _GO_LOG.match("\t" + log.split("\n")[0]))), None)
    location = f"{first_log.group(1)}:{first_log.group(2)}" if first_log else _location(frames, "_test.go")
    name = f"{test} ({package})" if package else test
    return TestFailure(name, _clip("\n".join(logs).splitlines()), location, _format_frames(frames[-TRACEBACK_FRAMES:]))


def _go_build_errors(lines: list[str]) -> list[TestFailure]:
    """`# package` followed by compiler errors: one failure per package."""
    failures = []
    for index, line in enumerate(lines):
        if not line.startswith("# "):
            continue
        errors = _until(lines[index + 1 :], lambda text: not _GO_BUILD_ERROR.match(text) and not text.startswith("\t"))
        first = _GO_BUILD_ERROR.match(errors[0]) if errors else None
        if first:
            package = line[2:].split()[0]  # "# example.com/m [example.com/m.test]"
            failures.append(
                TestFailure(f"{package} [build failed]", _clip(errors), f"{first.group(1)}:{first.group(2)}")
            )
    return failures


# --- dispatch

_PARSERS: dict[str, Callable[[str], _Parsed]] = {
    "pytest": _parse_pytest,
    "unittest": _parse_unittest,
    "jest": _parse_jest,
    "vitest": _parse_vitest,
    "cargo": _parse_cargo,
    "go": _parse_go,
}

# For npm scripts, make targets and custom commands: the runner's tell-tale lines.
_SIGNATURES = [
    ("jest", re.compile(r"^Test Suites: ", re.M)),
    ("vitest", re.compile(r"^\s*Test Files\s+\d", re.M)),
    ("cargo", re.compile(r"^test result: ", re.M)),
    ("go", re.compile(r"^(?:--- FAIL: |(?:ok|FAIL)\s+\S+\s+(?:[\d.]+s|\[))", re.M)),
    ("unittest", re.compile(r"^Ran \d+ tests? in ", re.M)),
    (
        "pytest",
        re.compile(
            r"^=+ (?:FAILURES|ERRORS|short test summary info) =+$|^=* ?\d+ (?:passed|failed)\b.* in [\d.]+s", re.M
        ),
    ),
]


def _recognise(text: str) -> Callable[[str], _Parsed] | None:
    return next((_PARSERS[framework] for framework, signature in _SIGNATURES if signature.search(text)), None)


# ---------------------------------------------------------------------------
# Reading project files: a broken or unreadable file counts as absent.


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(_read_text(path))
    except tomllib.TOMLDecodeError:
        return {}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(_read_text(path) or "{}")
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _table(data: Any, key: str) -> dict[str, Any]:
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, dict) else {}


def _has_ini_section(path: Path, section: str) -> bool:
    return bool(re.search(rf"^\[{re.escape(section)}\]", _read_text(path), re.M))
