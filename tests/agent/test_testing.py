"""Test runners: detection on fixture projects, narrowing, and parsing real output.

pytest and unittest output comes from real runs of small projects built here; cargo
and go likewise when their toolchains work offline (skipped otherwise). jest and
vitest can't be installed offline reliably, so their output is captured samples,
labelled below; cargo and go have captured samples too, so their parsers are covered
on machines without the toolchains.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kimicode.agent.testing import (
    TestCommand,
    TestFailure,
    TestOutcome,
    detect_test_command,
    parse_test_output,
)

REAL_HOME = Path.home()  # read at import, before the autouse fixture isolates HOME


def make(root: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(content))
    return root


# ---------------------------------------------------------------------------
# Detection


@pytest.mark.parametrize(
    ("files", "source"),
    [
        ({"pyproject.toml": "[tool.pytest.ini_options]\naddopts = '-q'\n"}, "pyproject.toml [tool.pytest.ini_options]"),
        (
            {"pyproject.toml": "[project]\nname = 'x'\n[project.optional-dependencies]\ndev = ['pytest>=8']\n"},
            "pytest in pyproject.toml dependencies",
        ),
        (
            {"pyproject.toml": "[dependency-groups]\ntest = ['pytest-asyncio']\n"},
            "pytest in pyproject.toml dependencies",
        ),
        ({"pytest.ini": "[pytest]\n"}, "pytest.ini"),
        ({"setup.cfg": "[metadata]\nname = x\n[tool:pytest]\ntestpaths = tests\n"}, "setup.cfg [tool:pytest]"),
        ({"tox.ini": "[tox]\n[pytest]\naddopts = -q\n"}, "tox.ini [pytest]"),
        ({"conftest.py": ""}, "conftest.py"),
        ({"tests/unit/test_app.py": "def test_x(): pass\n"}, "tests/test_*.py"),
    ],
)
def test_detects_pytest(tmp_path, files, source):
    found = detect_test_command(make(tmp_path, files))
    assert found is not None
    assert (found.framework, found.source, found.root) == ("pytest", source, tmp_path)
    assert found.command.endswith("python -m pytest -q") or found.command.endswith("python3 -m pytest -q")


def test_pytest_prefers_the_workspace_virtualenv(tmp_path):
    make(tmp_path, {"pytest.ini": "[pytest]\n", ".venv/bin/python": ""})
    assert detect_test_command(tmp_path).command == ".venv/bin/python -m pytest -q"


def test_pyproject_without_pytest_is_not_pytest(tmp_path):
    make(tmp_path, {"pyproject.toml": "[project]\nname = 'x'\ndependencies = ['pytestify', 'requests']\n"})
    assert detect_test_command(tmp_path) is None


@pytest.mark.parametrize(
    ("package", "lockfile", "command", "framework"),
    [
        ({"scripts": {"test": "jest --ci"}}, None, "npm test --silent", "jest"),
        ({"scripts": {"test": "vitest run"}}, "pnpm-lock.yaml", "pnpm test", "vitest"),
        (
            {"scripts": {"test": "npm run test:unit"}, "devDependencies": {"vitest": "^2"}},
            "yarn.lock",
            "yarn test",
            "vitest",
        ),
        ({"scripts": {"test": "react-scripts test"}}, None, "npm test --silent", "jest"),
        ({"scripts": {"test": "node --test"}}, None, "npm test --silent", "npm"),
    ],
)
def test_detects_package_json_scripts(tmp_path, package, lockfile, command, framework):
    make(tmp_path, {"package.json": json.dumps(package), **({lockfile: ""} if lockfile else {})})
    found = detect_test_command(tmp_path)
    assert (found.command, found.framework) == (command, framework)
    assert found.source.startswith("package.json scripts.test")


def test_npm_placeholder_test_script_is_no_test_command(tmp_path):
    make(tmp_path, {"package.json": '{"scripts": {"test": "echo \\"Error: no test specified\\" && exit 1"}}'})
    assert detect_test_command(tmp_path) is None
    make(tmp_path, {"Makefile": "build:\n\tcc x.c\n\ntest: build\n\t./run-tests\n"})
    assert detect_test_command(tmp_path).command == "make test"  # the next ecosystem is looked at


@pytest.mark.parametrize(
    ("files", "command", "framework", "source"),
    [
        ({"Cargo.toml": "[package]\nname = 'x'\n"}, "cargo test", "cargo", "Cargo.toml"),
        ({"go.mod": "module example.com/x\n"}, "go test ./...", "go", "go.mod"),
        ({"Makefile": "VAR := 1\ntest:\n\tpytest\n"}, "make test", "make", "Makefile test target"),
    ],
)
def test_detects_other_ecosystems(tmp_path, files, command, framework, source):
    found = detect_test_command(make(tmp_path, files))
    assert (found.command, found.framework, found.source) == (command, framework, source)


def test_nothing_found(tmp_path):
    make(tmp_path, {"README.md": "hi", "Makefile": "test := 1\nbuild:\n\tcc x.c\n", "pyproject.toml": "not toml ["})
    assert detect_test_command(tmp_path) is None


def test_pytest_is_preferred_to_package_json(tmp_path):
    make(tmp_path, {"pytest.ini": "[pytest]\n", "package.json": '{"scripts": {"test": "jest"}}'})
    assert detect_test_command(tmp_path).framework == "pytest"


@pytest.mark.parametrize(
    ("configured", "framework"),
    [
        ("uv run pytest -x", "pytest"),
        ("python -m unittest discover -s tests", "unittest"),
        ("npx vitest run", "vitest"),
        ("cargo test --workspace", "cargo"),
        ("go test -race ./...", "go"),
        ("make check", "make"),
        ("./scripts/run-tests.sh", "custom"),
    ],
)
def test_configured_command_wins(tmp_path, configured, framework):
    make(tmp_path, {"pytest.ini": "[pytest]\n"})
    found = detect_test_command(tmp_path, configured=f"  {configured} ")
    assert found == TestCommand(configured, framework, "config test_command", tmp_path)


def test_configured_package_manager_command_takes_the_framework_from_package_json(tmp_path):
    make(tmp_path, {"package.json": '{"scripts": {"test": "jest"}}'})
    assert detect_test_command(tmp_path, configured="yarn test").framework == "jest"
    assert detect_test_command(tmp_path, configured="   ").framework == "jest"  # blank: detected instead


# ---------------------------------------------------------------------------
# Narrowing


def test_pytest_narrows_to_changed_tests_and_counterparts(tmp_path):
    make(
        tmp_path,
        {
            "pkg/agent/testing.py": "",
            "pkg/util.py": "",
            "pkg/orphan.py": "",
            "tests/agent/test_testing.py": "",
            "tests/test_util.py": "",
            "tests/test_other.py": "",
        },
    )
    test = TestCommand("python -m pytest -q", "pytest", "pytest.ini", tmp_path)
    changed = [
        "pkg/agent/testing.py",
        str(tmp_path / "pkg/util.py"),
        "tests/test_other.py",
        "pkg/orphan.py",
        "README.md",
        "tests/test_gone.py",
    ]
    assert (
        test.narrowed(changed)
        == "python -m pytest -q tests/agent/test_testing.py tests/test_util.py tests/test_other.py"
    )
    assert test.narrowed(["README.md", "pkg/orphan.py"]) is None  # no relevant tests: run them all
    assert test.narrowed(["tests/conftest.py", "pkg/util.py"]) is None  # fixtures changed
    assert test.narrowed(["/elsewhere/test_x.py"]) is None


def test_jest_and_vitest_narrow_to_related_tests(tmp_path):
    npm = TestCommand("npm test --silent", "jest", "package.json", tmp_path)
    assert npm.narrowed(["src/a.ts", "docs/x.md"]) == "npm test --silent -- --findRelatedTests src/a.ts"
    assert (
        TestCommand("pnpm test", "jest", "", tmp_path).narrowed(["src/a b.js"])
        == "pnpm test --findRelatedTests 'src/a b.js'"
    )
    assert npm.narrowed(["docs/x.md"]) is None
    assert (
        TestCommand("npm test --silent", "vitest", "", tmp_path).narrowed(["src/a.ts"])
        == "npx vitest related --run src/a.ts"
    )
    assert (
        TestCommand("pnpm test", "vitest", "", tmp_path).narrowed(["src/a.ts"])
        == "pnpm exec vitest related --run src/a.ts"
    )


def test_go_narrows_to_changed_packages(tmp_path):
    make(tmp_path, {"go.mod": "module x\n", "calc/calc.go": "", "util/deep/u.go": "", "main.go": ""})
    test = TestCommand("go test -race ./...", "go", "go.mod", tmp_path)
    assert (
        test.narrowed(["calc/calc.go", "util/deep/u_test.go", "README.md"])
        == "go test -race ./calc/... ./util/deep/..."
    )
    assert test.narrowed(["main.go"]) == "go test -race ./..."
    assert test.narrowed(["README.md"]) is None


def test_cargo_narrows_to_workspace_members(tmp_path):
    make(
        tmp_path,
        {
            "Cargo.toml": "[workspace]\nmembers = ['crates/*']\n",
            "crates/core/Cargo.toml": "[package]\nname = 'tiny-core'\n",
            "crates/core/src/lib.rs": "",
            "crates/cli/Cargo.toml": "[package]\nname = 'tiny-cli'\n",
            "crates/cli/src/main.rs": "",
        },
    )
    test = TestCommand("cargo test -- --nocapture", "cargo", "Cargo.toml", tmp_path)
    assert (
        test.narrowed(["crates/core/src/lib.rs", "crates/cli/src/main.rs", "README.md"])
        == "cargo test -p tiny-core -p tiny-cli -- --nocapture"
    )
    assert test.narrowed(["build.rs"]) is None  # not inside a member crate
    single = make(tmp_path / "single", {"Cargo.toml": "[package]\nname = 'one'\n", "src/lib.rs": ""})
    assert TestCommand("cargo test", "cargo", "Cargo.toml", single).narrowed(["src/lib.rs"]) is None


@pytest.mark.parametrize("framework", ["make", "npm", "custom", "unittest"])
def test_frameworks_that_cannot_narrow(tmp_path, framework):
    assert TestCommand("run-tests", framework, "", tmp_path).narrowed(["tests/test_x.py"]) is None


# ---------------------------------------------------------------------------
# pytest: real runs


@pytest.fixture
def pytest_project(tmp_path):
    """A project whose helper calls into a library installed in a (fake) site-packages."""
    site = make(
        tmp_path / "env/lib/python3.11/site-packages",
        {"fakelib/__init__.py": "def explode():\n    raise KeyError('deep inside the library')\n"},
    )
    project = make(
        tmp_path / "project",
        {
            "app/__init__.py": "",
            "app/helper.py": """\
                import fakelib

                def parse(text):
                    return int(text)

                def load():
                    return fakelib.explode()
                """,
            "tests/test_app.py": """\
                import pytest
                from app.helper import load, parse

                def test_ok():
                    assert parse("1") == 1

                def test_diff():
                    assert {"a": 1, "b": [1, 2, 3]} == {"a": 1, "b": [1, 2, 4]}

                def test_helper():
                    assert parse("x") == 1

                def test_library():
                    load()

                @pytest.fixture
                def broken():
                    raise RuntimeError("fixture exploded")

                def test_uses_broken(broken):
                    pass

                @pytest.mark.skip(reason="not today")
                def test_skipped():
                    pass

                class TestGroup:
                    @pytest.mark.parametrize("n", [1.5])
                    def test_param(self, n):
                        assert n == 2
                """,
            "tests/test_broken_import.py": "import not_a_module_anywhere\n\ndef test_never():\n    pass\n",
        },
    )
    return project, site


def run_pytest(project: Path, site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    env.pop("PYTEST_ADDOPTS", None)
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]
    return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=120)


EXPECTED_PYTEST_FAILURES = {
    "tests/test_app.py::test_diff",
    "tests/test_app.py::test_helper",
    "tests/test_app.py::test_library",
    "tests/test_app.py::test_uses_broken",
    "tests/test_app.py::TestGroup::test_param[1.5]",
    "tests/test_broken_import.py",
}


@pytest.mark.parametrize("verbosity", [["-q"], []], ids=["quiet", "default"])
def test_parses_a_real_pytest_run(pytest_project, verbosity):
    project, site = pytest_project
    run = run_pytest(project, site, *verbosity, "--continue-on-collection-errors")
    outcome = parse_test_output("pytest", run.stdout + run.stderr, run.returncode)

    assert (outcome.passed, outcome.exit_code) == (False, 1)
    assert outcome.counts == {"passed": 1, "failed": 4, "errors": 2, "skipped": 1}
    failures = {failure.name: failure for failure in outcome.failures}
    assert set(failures) == EXPECTED_PYTEST_FAILURES

    diff = failures["tests/test_app.py::test_diff"]
    assert diff.location == "tests/test_app.py:8"
    assert diff.message.startswith("AssertionError: assert {'a': 1, 'b': [1, 2, 3]} == {'a': 1, 'b': [1, 2, 4]}")
    assert "Differing items:" in diff.message

    helper = failures["tests/test_app.py::test_helper"]
    assert helper.location == "tests/test_app.py:11"  # the test's line; the traceback goes deeper
    assert helper.message == "ValueError: invalid literal for int() with base 10: 'x'"
    assert helper.traceback.splitlines() == [
        'tests/test_app.py:11: assert parse("x") == 1',
        "app/helper.py:4: return int(text)",
    ]

    library = failures["tests/test_app.py::test_library"]
    assert "KeyError: 'deep inside the library'" in library.message
    assert library.traceback.splitlines()[-1] == "app/helper.py:7: return fakelib.explode()"
    assert "site-packages" not in library.traceback

    fixture = failures["tests/test_app.py::test_uses_broken"]
    assert (fixture.message, fixture.location) == ("RuntimeError: fixture exploded", "tests/test_app.py:18")

    assert failures["tests/test_app.py::TestGroup::test_param[1.5]"].message.startswith("assert 1.5 == 2")

    collection = failures["tests/test_broken_import.py"]
    assert collection.message == "ModuleNotFoundError: No module named 'not_a_module_anywhere'"
    assert collection.location == "tests/test_broken_import.py:1"

    summary = outcome.summary()
    assert summary.startswith("Tests failed (exit code 1): 4 failed, 2 errors, 1 passed, 1 skipped.\n")
    assert all(name in summary for name in EXPECTED_PYTEST_FAILURES)
    assert "site-packages" not in summary and "importlib" not in summary
    assert "  at app/helper.py:4: return int(text)" in summary
    assert len(summary) <= 4000


def test_pytest_collection_error_interrupts_the_run(pytest_project):
    project, site = pytest_project
    run = run_pytest(project, site, "-q")
    outcome = parse_test_output("pytest", run.stdout + run.stderr, run.returncode)
    assert outcome.exit_code == 2
    assert [failure.name for failure in outcome.failures] == ["tests/test_broken_import.py"]
    assert outcome.counts == {"passed": 0, "failed": 0, "errors": 1, "skipped": 0}
    assert "Interrupted: 1 error during collection" in outcome.note
    assert "Interrupted" in outcome.summary()


def test_pytest_pass_and_no_tests(pytest_project):
    project, site = pytest_project
    run = run_pytest(project, site, "-q", "tests/test_app.py::test_ok", "tests/test_app.py::test_skipped")
    outcome = parse_test_output("pytest", run.stdout, run.returncode)
    assert outcome.passed and outcome.failures == []
    assert outcome.summary() == "Tests passed: 1 passed, 1 skipped."

    run = run_pytest(project, site, "-q", "-k", "nothing_matches_this", "tests/test_app.py")
    outcome = parse_test_output("pytest", run.stdout, run.returncode)
    assert (outcome.passed, outcome.exit_code) == (False, 5)
    assert outcome.counts["deselected"] == 7
    assert outcome.summary().startswith("Tests failed (exit code 5): 7 deselected.\nNo tests ran.\n")


def test_pytest_short_summary_alone(pytest_project):
    """--tb=no leaves only the short summary lines: names and truncated messages."""
    project, site = pytest_project
    run = run_pytest(project, site, "-q", "--tb=no", "tests/test_app.py")
    outcome = parse_test_output("pytest", run.stdout, run.returncode)
    names = {failure.name for failure in outcome.failures}
    assert names == EXPECTED_PYTEST_FAILURES - {"tests/test_broken_import.py"}
    assert (
        next(f for f in outcome.failures if f.name.endswith("test_uses_broken")).message
        == "RuntimeError: fixture exploded"
    )


# ---------------------------------------------------------------------------
# unittest: real run


def test_parses_a_real_unittest_run(tmp_path):
    project = make(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/helper.py": "def parse(text):\n    return int(text)\n",
            "tests/__init__.py": "",
            "tests/test_units.py": """\
                import unittest
                from app.helper import parse

                class Units(unittest.TestCase):
                    def test_ok(self):
                        self.assertEqual(parse("1"), 1)

                    def test_lists(self):
                        self.assertEqual([1, 2, 3], [1, 2, 4])

                    def test_helper(self):
                        parse("x")

                    @unittest.skip("later")
                    def test_later(self):
                        pass
                """,
        },
    )
    run = subprocess.run(
        [sys.executable, "-m", "unittest", "tests.test_units", "tests.test_missing"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )
    outcome = parse_test_output("unittest", run.stderr, run.returncode)

    assert not outcome.passed
    assert outcome.counts == {"passed": 1, "failed": 1, "errors": 2, "skipped": 1}
    failures = {failure.name: failure for failure in outcome.failures}
    assert set(failures) == {
        "tests.test_units.Units.test_lists",
        "tests.test_units.Units.test_helper",
        "unittest.loader._FailedTest.test_missing",
    }

    lists = failures["tests.test_units.Units.test_lists"]
    assert lists.message.startswith("AssertionError: Lists differ: [1, 2, 3] != [1, 2, 4]")
    assert lists.location.endswith("tests/test_units.py:9")

    helper = failures["tests.test_units.Units.test_helper"]
    assert helper.message == "ValueError: invalid literal for int() with base 10: 'x'"
    assert helper.location.endswith("tests/test_units.py:12")
    assert helper.traceback.splitlines()[-1].endswith("app/helper.py:2: return int(text)")

    missing = failures["unittest.loader._FailedTest.test_missing"]
    assert "No module named 'tests.test_missing'" in missing.message
    assert "unittest/loader.py" not in missing.traceback  # the standard library's frames are left out


# ---------------------------------------------------------------------------
# cargo: a real run when the toolchain builds offline, and a captured sample


def toolchain_env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "CARGO_TARGET_DIR": str(tmp_path / "target"), "RUST_BACKTRACE": "1"}
    for name, folder in (("RUSTUP_HOME", ".rustup"), ("CARGO_HOME", ".cargo")):
        if name not in env and (REAL_HOME / folder).is_dir():
            env[name] = str(REAL_HOME / folder)  # rustup finds its toolchains under the real home
    return env


def cargo_test(crate: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("cargo") is None:
        pytest.skip("cargo is not installed")
    run = subprocess.run(
        ["cargo", "test", "--offline"],
        cwd=crate,
        env=toolchain_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if "test result:" not in run.stdout and "could not compile" not in run.stderr:
        pytest.skip(f"cargo cannot build offline here: {run.stderr.strip()[-300:]}")
    return run


CARGO_TOML = '[package]\nname = "tiny"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\n'


def test_parses_a_real_cargo_test_run(tmp_path):
    crate = make(
        tmp_path / "tiny",
        {
            "Cargo.toml": CARGO_TOML,
            "src/lib.rs": """\
                pub fn add(a: i32, b: i32) -> i32 { a + b }
                pub fn at(v: &[i32], i: usize) -> i32 { v[i] }

                #[cfg(test)]
                mod tests {
                    use super::*;
                    #[test]
                    fn adds() { assert_eq!(add(1, 2), 3); }
                    #[test]
                    fn adds_wrong() { assert_eq!(add(1, 2), 4, "math is broken"); }
                    #[test]
                    fn out_of_bounds() { at(&[], 3); }
                    #[test]
                    #[ignore]
                    fn slow() {}
                }
                """,
        },
    )
    run = cargo_test(crate, tmp_path)
    outcome = parse_test_output("cargo", run.stdout + run.stderr, run.returncode)

    assert (outcome.passed, outcome.exit_code) == (False, 101)
    assert outcome.counts == {"passed": 1, "failed": 2, "errors": 0, "skipped": 1}
    failures = {failure.name: failure for failure in outcome.failures}
    assert set(failures) == {"tests::adds_wrong", "tests::out_of_bounds"}
    assert failures["tests::adds_wrong"].location == "src/lib.rs:10"
    assert failures["tests::adds_wrong"].message.splitlines()[0] == "assertion `left == right` failed: math is broken"
    assert failures["tests::out_of_bounds"].message == "index out of bounds: the len is 0 but the index is 3"
    if failures["tests::out_of_bounds"].traceback:  # a backtrace, where this toolchain prints one
        assert "/rustc/" not in failures["tests::out_of_bounds"].traceback
    assert "/rustc/" not in outcome.summary()


def test_parses_a_real_cargo_build_failure(tmp_path):
    crate = make(tmp_path / "tiny", {"Cargo.toml": CARGO_TOML, "src/lib.rs": 'pub fn add(a: i32) -> i32 { a + "x" }\n'})
    run = cargo_test(crate, tmp_path)
    outcome = parse_test_output("cargo", run.stdout + run.stderr, run.returncode)
    assert not outcome.passed
    assert [(f.name, f.location) for f in outcome.failures] == [("(build)", "src/lib.rs:1")]
    assert outcome.failures[0].message.startswith("error[E0277]: cannot add `&str` to `i32`")
    assert "The build failed" in outcome.note


# Captured from `cargo test` (cargo 1.95, RUST_BACKTRACE=1), backtraces shortened.
CARGO_SAMPLE = """\
running 4 tests
test tests::adds ... ok
test tests::adds_wrong ... FAILED
test tests::slow ... ignored
test tests::panics ... FAILED

failures:

---- tests::adds_wrong stdout ----

thread 'tests::adds_wrong' (26028) panicked at src/lib.rs:9:23:
assertion `left == right` failed: math is broken
  left: 3
 right: 4
stack backtrace:
   3: core::panicking::assert_failed::<i32, i32>
             at /rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/core/src/panicking.rs:394:5
   4: tiny::tests::adds_wrong
             at ./src/lib.rs:9:23
   5: tiny::tests::adds_wrong::{{closure}}
             at ./src/lib.rs:9:20
note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.

---- tests::panics stdout ----

thread 'tests::panics' (26029) panicked at src/lib.rs:11:54:
index out of bounds: the len is 0 but the index is 3
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace


failures:
    tests::adds_wrong
    tests::panics

test result: FAILED. 1 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.06s

error: test failed, to rerun pass `--lib`
"""


def test_parses_captured_cargo_output():
    outcome = parse_test_output("cargo", CARGO_SAMPLE, 101)
    assert outcome.counts == {"passed": 1, "failed": 2, "errors": 0, "skipped": 1}
    adds_wrong, panics = outcome.failures
    assert adds_wrong == TestFailure(
        "tests::adds_wrong",
        "assertion `left == right` failed: math is broken\n  left: 3\n right: 4",
        "src/lib.rs:9",
        "src/lib.rs:9: tiny::tests::adds_wrong",
    )
    assert (panics.name, panics.location, panics.traceback) == ("tests::panics", "src/lib.rs:11", "")


# ---------------------------------------------------------------------------
# go: a real run when go is installed, and a captured sample


GO_FILES = {
    "go.mod": "module example.com/tiny\n\ngo 1.18\n",
    "calc/calc.go": "package calc\n\nfunc Add(a, b int) int { return a + b }\n",
    "calc/calc_test.go": """\
        package calc

        import "testing"

        func TestAdd(t *testing.T) {
        \tif Add(1, 2) != 3 {
        \t\tt.Fatal("broken")
        \t}
        }

        func TestAddWrong(t *testing.T) {
        \tif got := Add(1, 2); got != 4 {
        \t\tt.Errorf("Add(1, 2) = %d; want 4", got)
        \t}
        }

        func TestTable(t *testing.T) {
        \tt.Run("zero", func(t *testing.T) {})
        \tt.Run("neg", func(t *testing.T) { t.Fatalf("multi\\nline") })
        }

        func TestSkip(t *testing.T) { t.Skip("later") }
        """,
    "util/util.go": "package util\n\nfunc At(xs []int, i int) int { return xs[i] }\n",
    "util/util_test.go": 'package util\n\nimport "testing"\n\nfunc TestPanics(t *testing.T) {\n\tAt([]int{}, 3)\n}\n',
}


def go_test(module: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("go") is None:
        pytest.skip("go is not installed")
    env = {
        **os.environ,
        "GOPATH": str(tmp_path / "gopath"),
        "GOCACHE": str(tmp_path / "gocache"),
        "GOFLAGS": "-mod=mod",
        "GOPROXY": "off",
        "GOTOOLCHAIN": "local",
    }
    return subprocess.run(
        ["go", "test", *args, "./..."], cwd=module, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("verbose", [False, True], ids=["default", "verbose"])
def test_parses_a_real_go_test_run(tmp_path, verbose):
    module = make(tmp_path / "module", GO_FILES)
    run = go_test(module, tmp_path, *(["-v"] if verbose else []))
    outcome = parse_test_output("go", run.stdout + run.stderr, run.returncode)

    assert not outcome.passed
    failures = {failure.name: failure for failure in outcome.failures}
    assert set(failures) == {
        "TestAddWrong (example.com/tiny/calc)",
        "TestTable/neg (example.com/tiny/calc)",
        "TestPanics (example.com/tiny/util)",
    }
    assert failures["TestAddWrong (example.com/tiny/calc)"].message == "calc_test.go:13: Add(1, 2) = 3; want 4"
    assert failures["TestAddWrong (example.com/tiny/calc)"].location == "calc_test.go:13"
    assert failures["TestTable/neg (example.com/tiny/calc)"].message == "calc_test.go:19: multi\nline"
    panic = failures["TestPanics (example.com/tiny/util)"]
    assert panic.message.startswith("panic: runtime error: index out of range [3] with length 0")
    assert panic.location.endswith("util/util_test.go:6")
    assert panic.traceback.splitlines()[-1].endswith("util/util.go:3: example.com/tiny/util.At")
    assert "src/testing/" not in outcome.summary()
    expected = {"failed": 3, "errors": 0, "passed": 2, "skipped": 1} if verbose else {"failed": 3, "errors": 0}
    assert outcome.counts == expected


def test_parses_a_real_go_build_failure(tmp_path):
    module = make(
        tmp_path / "module",
        {**GO_FILES, "calc/broken_test.go": "package calc\n\nfunc TestBroken(t *testing.T) { Foo() }\n"},
    )
    run = go_test(module, tmp_path)
    outcome = parse_test_output("go", run.stdout + run.stderr, run.returncode)
    build = next(failure for failure in outcome.failures if failure.name.endswith("[build failed]"))
    assert build.name == "example.com/tiny/calc [build failed]"
    assert build.location == "calc/broken_test.go:3"
    assert "undefined" in build.message
    assert outcome.counts["errors"] == 1


# Captured from `go test ./...` (go 1.19) on the module above, goroutine dump shortened.
GO_SAMPLE = """\
--- FAIL: TestAddWrong (0.00s)
    calc_test.go:13: Add(1, 2) = 3; want 4
--- FAIL: TestTable (0.00s)
    --- FAIL: TestTable/neg (0.00s)
        calc_test.go:20: multi
            line
FAIL
FAIL\texample.com/tiny/calc\t0.003s
--- FAIL: TestPanics (0.00s)
panic: runtime error: index out of range [3] with length 0 [recovered]
\tpanic: runtime error: index out of range [3] with length 0

goroutine 18 [running]:
testing.tRunner.func1.2({0x518a00, 0xc0000cc000})
\t/usr/lib/go-1.19/src/testing/testing.go:1396 +0x24e
example.com/tiny/util.At(...)
\t/tmp/tt/go/util/util.go:3
example.com/tiny/util.TestPanics(0x0?)
\t/tmp/tt/go/util/util_test.go:6 +0x1a
testing.tRunner(0xc000096680, 0x52f2e8)
\t/usr/lib/go-1.19/src/testing/testing.go:1446 +0x10b
FAIL\texample.com/tiny/util\t0.011s
ok  \texample.com/tiny/other\t0.002s
FAIL
"""


def test_parses_captured_go_output():
    outcome = parse_test_output("go", GO_SAMPLE, 1)
    assert [f.name for f in outcome.failures] == [
        "TestAddWrong (example.com/tiny/calc)",
        "TestTable/neg (example.com/tiny/calc)",
        "TestPanics (example.com/tiny/util)",
    ]
    assert outcome.failures[1] == TestFailure(
        "TestTable/neg (example.com/tiny/calc)", "calc_test.go:20: multi\nline", "calc_test.go:20"
    )
    assert outcome.failures[2].location == "/tmp/tt/go/util/util_test.go:6"
    assert outcome.failures[2].traceback.splitlines() == [
        "/tmp/tt/go/util/util_test.go:6: example.com/tiny/util.TestPanics",
        "/tmp/tt/go/util/util.go:3: example.com/tiny/util.At",
    ]
    assert outcome.counts == {"failed": 3, "errors": 0}


# ---------------------------------------------------------------------------
# jest and vitest: captured samples (not installable offline reliably)


# Captured from `npx jest` (jest 30.5) on a project with a failing assertion, an
# exception thrown in a helper module, a suite that fails to load and a passing file.
JEST_SAMPLE = """\
FAIL src/sum.test.js
  ● sum › adds wrong

    expect(received).toEqual(expected) // deep equality

    - Expected  - 1
    + Received  + 1

      Object {
        "a": 1,
        "b": Array [
          1,
          2,
    -     4,
    +     3,
        ],
      }

      3 |   test('adds', () => { expect(1 + 2).toBe(3); });
      4 |   test('adds wrong', () => {
    > 5 |     expect({ a: 1, b: [1, 2, 3] }).toEqual({ a: 1, b: [1, 2, 4] });
        |                                    ^
      6 |   });

      at Object.toEqual (src/sum.test.js:5:36)

  ● sum › throws in helper

    TypeError: Cannot read properties of undefined (reading 'y')

      1 | function getX(o) {
    > 2 |   return o.x.y;
        |              ^
      3 | }

      at y (src/helper.js:2:14)
      at Object.getX (src/sum.test.js:7:36)

FAIL src/broken.test.js
  ● Test suite failed to run

    Cannot find module './missing-module' from 'src/broken.test.js'

    > 1 | const x = require('./missing-module');
        |           ^
      2 | test('never', () => {});

      at Resolver._throwModNotFoundError (node_modules/jest-resolve/build/index.js:1031:11)
      at Object.require (src/broken.test.js:1:11)

PASS src/ok.test.js

Test Suites: 2 failed, 1 passed, 3 total
Tests:       2 failed, 1 skipped, 2 passed, 5 total
Snapshots:   0 total
Time:        0.321 s
Ran all test suites.
"""


def test_parses_captured_jest_output():
    outcome = parse_test_output("jest", JEST_SAMPLE, 1)
    assert outcome.counts == {"passed": 2, "failed": 2, "errors": 1, "skipped": 1, "total": 5}
    wrong, helper, suite = outcome.failures
    assert wrong.name == "src/sum.test.js › sum › adds wrong"
    assert wrong.location == "src/sum.test.js:5"
    assert wrong.message.splitlines()[0] == "expect(received).toEqual(expected) // deep equality"
    assert "-     4," in wrong.message and "3 |" not in wrong.message
    assert helper == TestFailure(
        "src/sum.test.js › sum › throws in helper",
        "TypeError: Cannot read properties of undefined (reading 'y')",
        "src/sum.test.js:7",
        "src/sum.test.js:7\nsrc/helper.js:2: return o.x.y;",
    )
    assert suite.name == "src/broken.test.js › Test suite failed to run"
    assert suite.traceback == "src/broken.test.js:1: const x = require('./missing-module');"  # node_modules left out


def test_jest_verbose_marks_without_sections():
    # Captured from `jest --verbose` with a reporter that prints no failure details.
    sample = "FAIL src/sum.test.js\n  sum\n    ✓ adds (1 ms)\n    ✕ adds wrong (2 ms)\n    ○ skipped later\n"
    assert [f.name for f in parse_test_output("jest", sample, 1).failures] == ["adds wrong"]


# Captured from `NO_COLOR=1 npx vitest run` (vitest 4.1) on the same tests, ported to ESM.
VITEST_SAMPLE = """\
 RUN  v4.1.12 /tmp/tt/vt

 ❯ src/sum.test.js (4 tests | 2 failed | 1 skipped) 7ms
     ✓ adds 1ms
     × adds wrong 5ms
     × throws in helper 0ms
     ↓ later
 ❯ src/broken.test.js (0 test)
 ✓ src/ok.test.js (1 test) 2ms

⎯⎯⎯⎯⎯⎯ Failed Suites 1 ⎯⎯⎯⎯⎯⎯⎯

 FAIL  src/broken.test.js [ src/broken.test.js ]
Error: Cannot find module './missing-module.js' imported from /tmp/tt/vt/src/broken.test.js
 ❯ src/broken.test.js:1:1
      1| import x from './missing-module.js';
       | ^
      2| import { test } from 'vitest';

⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯[1/3]⎯


⎯⎯⎯⎯⎯⎯⎯ Failed Tests 2 ⎯⎯⎯⎯⎯⎯⎯

 FAIL  src/sum.test.js > sum > adds wrong
AssertionError: expected { a: 1, b: [ 1, 2, 3 ] } to deeply equal { a: 1, b: [ 1, 2, 4 ] }

- Expected
+ Received

  {
    "a": 1,
    "b": [
      1,
      2,
-     4,
+     3,
    ],
  }

 ❯ src/sum.test.js:6:36
      4|   test('adds', () => { expect(1 + 2).toBe(3); });
      5|   test('adds wrong', () => {
      6|     expect({ a: 1, b: [1, 2, 3] }).toEqual({ a: 1, b: [1, 2, 4] });
       |                                    ^
      7|   });

⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯[2/3]⎯

 FAIL  src/sum.test.js > sum > throws in helper
TypeError: Cannot read properties of undefined (reading 'y')
 ❯ getX src/helper.js:2:14
      1| export function getX(o) {
      2|   return o.x.y;
       |              ^
      3| }
 ❯ src/sum.test.js:8:36

⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯[3/3]⎯


 Test Files  2 failed | 1 passed (3)
      Tests  2 failed | 2 passed | 1 skipped (5)
   Start at  13:17:58
   Duration  528ms (transform 41ms, setup 0ms, import 36ms, tests 9ms, environment 0ms)
"""


def test_parses_captured_vitest_output():
    outcome = parse_test_output("vitest", VITEST_SAMPLE, 1)
    assert outcome.counts == {"passed": 2, "failed": 2, "errors": 1, "skipped": 1}
    suite, wrong, helper = outcome.failures
    assert (suite.name, suite.location) == ("src/broken.test.js › suite failed to run", "src/broken.test.js:1")
    assert suite.message.startswith("Error: Cannot find module './missing-module.js'")
    assert wrong.name == "src/sum.test.js > sum > adds wrong"
    assert wrong.location == "src/sum.test.js:6"
    assert wrong.message.splitlines()[0].startswith("AssertionError: expected { a: 1")
    assert wrong.traceback == "src/sum.test.js:6: expect({ a: 1, b: [1, 2, 3] }).toEqual({ a: 1, b: [1, 2, 4] });"
    assert helper == TestFailure(
        "src/sum.test.js > sum > throws in helper",
        "TypeError: Cannot read properties of undefined (reading 'y')",
        "src/sum.test.js:8",
        "src/sum.test.js:8\nsrc/helper.js:2: return o.x.y;",
    )


def test_colour_codes_are_ignored():
    coloured = VITEST_SAMPLE.replace(" FAIL ", "\x1b[41m\x1b[1m FAIL \x1b[22m\x1b[49m").replace(
        "Tests  2 failed", "Tests  \x1b[1m\x1b[31m2 failed\x1b[39m\x1b[22m"
    )
    outcome = parse_test_output("vitest", coloured, 1)
    assert len(outcome.failures) == 3 and outcome.counts["failed"] == 2


# ---------------------------------------------------------------------------
# Recognising output, fallbacks, timeouts and crashes


def test_wrapped_runners_are_recognised_by_their_output():
    assert [f.name for f in parse_test_output("npm", JEST_SAMPLE, 1).failures][
        0
    ] == "src/sum.test.js › sum › adds wrong"
    assert parse_test_output("make", CARGO_SAMPLE, 2).counts["failed"] == 2
    assert parse_test_output("custom", GO_SAMPLE, 1).failures[0].name == "TestAddWrong (example.com/tiny/calc)"


def test_generic_fallback_keeps_the_last_lines():
    output = "\n".join(f"line {n}" for n in range(100)) + "\nsomething broke\n"
    outcome = parse_test_output("custom", output, 3)
    assert (outcome.passed, outcome.failures, outcome.counts) == (False, [], {})
    summary = outcome.summary()
    assert summary.startswith("Tests failed (exit code 3).")
    assert "something broke" in summary and "line 99" in summary and "line 50" not in summary
    assert "line 61" in summary  # the last 40 lines
    assert len(outcome.summary(max_chars=120)) <= 120

    assert parse_test_output("custom", output, 0).summary() == "Tests passed."


def test_timeouts_and_crashes_are_said():
    partial = "tests/test_a.py ..\n"
    timed_out = parse_test_output("pytest", partial, -15, timed_out=True)
    assert not timed_out.passed and "timed out" in timed_out.summary()
    assert "tests/test_a.py .." in timed_out.summary()

    footer = parse_test_output(
        "custom", "....\n[timed out after 120 s; the command and its child processes were stopped]", 0
    )
    assert not footer.passed and "timed out" in footer.note  # the shell tool's footer is understood

    assert "killed by SIGSEGV" in parse_test_output("pytest", partial, -11).summary()
    assert "SIGKILL" in parse_test_output("cargo", "", 137).note
    crash = parse_test_output("pytest", "Fatal Python error: Segmentation fault\n\nCurrent thread ...", 139)
    assert "crashed: Fatal Python error: Segmentation fault" in crash.summary()


# ---------------------------------------------------------------------------
# The summary's cap


def failing(count: int, message_lines: int = 12) -> TestOutcome:
    failures = [
        TestFailure(
            f"tests/test_big.py::test_case_{n}",
            "\n".join(f"AssertionError: detail {k} of case {n} " + "x" * 60 for k in range(message_lines)),
            f"tests/test_big.py:{n + 10}",
            "\n".join(f"src/module_{k}.py:{k + 1}: call_{k}()" for k in range(3)),
        )
        for n in range(count)
    ]
    return TestOutcome(False, 1, {"failed": count, "passed": 5}, failures)


@pytest.mark.parametrize("max_chars", [4000, 2500, 1500])
def test_summary_is_capped_and_names_every_failing_test(max_chars):
    summary = failing(20).summary(max_chars=max_chars)
    assert len(summary) <= max_chars
    assert summary.startswith("Tests failed (exit code 1): 20 failed, 5 passed.")
    assert all(f"tests/test_big.py::test_case_{n} at tests/test_big.py:{n + 10}" in summary for n in range(20))
    assert summary.endswith("failing tests trimmed]")


def test_summary_gives_the_first_failures_the_most_detail():
    summary = failing(3).summary(max_chars=2000)
    first, _, rest = summary.partition("tests/test_big.py::test_case_1")
    assert "detail 5 of case 0" in first
    assert "AssertionError: detail 0 of case 2" in rest  # later tests keep their first message line


def test_summary_lists_what_it_cannot_name():
    summary = failing(500).summary()
    assert len(summary) <= 4000
    assert "tests/test_big.py::test_case_0 at" in summary
    assert summary.endswith("more failing tests not listed]")


def test_summary_uncapped_when_it_fits():
    outcome = failing(1, message_lines=2)
    summary = outcome.summary()
    assert "capped" not in summary
    assert summary.splitlines()[1:] == [
        "FAIL tests/test_big.py::test_case_0 at tests/test_big.py:10",
        "    AssertionError: detail 0 of case 0 " + "x" * 60,
        "    AssertionError: detail 1 of case 0 " + "x" * 60,
        "  at src/module_0.py:1: call_0()",
        "  at src/module_1.py:2: call_1()",
        "  at src/module_2.py:3: call_2()",
    ]
