"""Ranking and rendering the repo map (tags built by hand: this tests the graph, not the parser)."""

import random

from kimicode.index.model import FileTags, Tag
from kimicode.index.rank import rank_definitions
from kimicode.index.repomap import CHARS_PER_TOKEN, default_budget, render_map


def define(name, line, category="function", scope=""):
    return Tag("def", name, category, line, line + 3, f"def {name}(...):" if category != "class" else f"class {name}:", scope)


def use(name, line):
    return Tag("ref", name, "call", line, line)


def fixture_repo():
    files = [FileTags("core/engine.py", "python", (define("Engine", 1, "class"), define("run", 5, "method", "Engine"),
                                                    define("_internal", 40)))]
    for i in range(8):
        files.append(FileTags(f"plugins/p{i}.py", "python",
                              (define(f"plugin_{i}", 1), use("Engine", 3), use("run", 4), use("helper", 6))))
    files.append(FileTags("util.py", "python", (define("helper", 1), use("_internal", 2))))
    files.append(FileTags("lonely.py", "python", (define("unused_thing", 1),)))
    return files


def test_the_central_class_ranks_first():
    ranked = rank_definitions(fixture_repo())
    assert [(path, tag.name) for _, path, tag in ranked[:3]] == [
        ("core/engine.py", "Engine"), ("core/engine.py", "run"), ("util.py", "helper")]


def test_focus_moves_a_file_or_name_up():
    files = fixture_repo()
    plain = [tag.name for _, _, tag in rank_definitions(files)]
    focused = [tag.name for _, _, tag in rank_definitions(files, focus_files={"lonely.py"})]
    assert plain.index("unused_thing") > focused.index("unused_thing")
    by_name = [tag.name for _, _, tag in rank_definitions(files, focus_names={"plugin_3"})]
    assert by_name.index("plugin_3") < plain.index("plugin_3")


def test_map_fits_the_budget_is_grouped_and_deterministic():
    rng = random.Random(7)
    files = []
    for f in range(60):
        tags = [define(f"f{f}_{d}", d * 10 + 1) for d in range(15)]
        tags += [use(f"f{rng.randrange(60)}_{rng.randrange(15)}", 200 + r) for r in range(20)]
        files.append(FileTags(f"pkg/mod{f:02}.py", "python", tuple(tags)))
    for budget in (50, 300, 1_000, 4_000):
        text = render_map(files, budget)
        assert len(text) / CHARS_PER_TOKEN <= budget
        assert text == render_map(list(reversed(files)), budget)  # order of input does not matter
    big = render_map(files, 4_000)
    assert big.count(":\n") > 5 and "│ def f" in big
    headers = [line for line in big.splitlines() if line and not line[0].isspace()]
    assert headers == sorted(headers)


def test_map_lines_cite_line_numbers_and_nest_methods():
    text = render_map(fixture_repo(), 2_000)
    assert "core/engine.py:\n    1│ class Engine:\n    5│     def run(...):" in text


def test_empty_repo_and_budget_helpers():
    assert render_map([], 1_000) == ""
    assert default_budget(262_144) == 8_192 and default_budget(4_096) == 1_024 and default_budget(32_768) == 4_096
