"""kimicode's repo index/map against Aider's repo map, side by side on the same corpus.

Aider must not go into kimicode's venv, so this script runs in a venv of its own and
drives kimicode through its CLI (subprocess):

    python3 -m venv /tmp/aider-bench/venv
    /tmp/aider-bench/venv/bin/pip install aider-chat      # measured: aider-chat 0.86.2,
    #   grep-ast 0.9.0, tree-sitter 0.25.2, tree-sitter-language-pack 0.13.0 (grammars bundled,
    #   so the repo map works offline; tiktoken files for token counting ship inside litellm)
    cd /work/main
    /tmp/aider-bench/venv/bin/python bench/aider_compare.py --kimicode /work/main/.venv/bin/kimicode

The corpus is the one bench/index.py builds (its build_corpus(), run with the kimicode venv's
interpreter, i.e. the sibling `python` of --kimicode, so it copies that venv's packages).

Timed, median of --runs (default 3), all on the same corpus:
  aider cold     new RepoMap + get_repo_map() with .aider.tags.cache.v* removed (in process)
  aider warm     new RepoMap + get_repo_map() with the tags cache present (in process)
  kimicode       `kimicode index` with .kimicode/cache removed (cold), `kimicode map` with the
                 cache removed (cold, end to end), `kimicode map` and `kimicode index` with the
                 cache present (warm); wall time of the subprocess, so it includes interpreter
                 start-up and imports, which the in-process Aider figures do not (the start-up
                 cost is printed separately as `kimicode --version`).

Network is blocked in this process (socket.connect raises for non-Unix sockets) and Aider's
model-metadata download is stubbed out; token counting uses the model's real tokenizer
(tiktoken via litellm, bundled files), so a failure to count tokens would show, not hide.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

_real_connect = socket.socket.connect


def _no_network(self, address):
    if self.family == getattr(socket, "AF_UNIX", None):
        return _real_connect(self, address)
    raise OSError(f"network disabled by aider_compare.py (tried {address!r})")


socket.socket.connect = _no_network

from aider import models as aider_models  # noqa: E402
from aider import repomap as aider_repomap  # noqa: E402
from aider.io import InputOutput  # noqa: E402
from aider.repomap import RepoMap  # noqa: E402

aider_models.ModelInfoManager._update_cache = lambda self: None
aider_repomap.tqdm = lambda iterable, **kwargs: iterable  # no progress bar on a cold scan

BENCH_DIR = Path(__file__).resolve().parent


def build_corpus(kimicode_python: Path, root: Path, packages: list[str] | None) -> str:
    """Run bench/index.py's build_corpus() under the kimicode interpreter; return its summary."""
    code = (
        "import importlib.util, sys\n"
        "from pathlib import Path\n"
        "spec = importlib.util.spec_from_file_location('kc_bench_index', sys.argv[1])\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "packages = sys.argv[3:] or m.DEFAULT_PACKAGES\n"
        "counts = m.build_corpus(Path(sys.argv[2]), packages)\n"
        "print(' '.join(packages), '|', counts)\n"
    )
    out = subprocess.run(
        [str(kimicode_python), "-c", code, str(BENCH_DIR / "index.py"), str(root), *(packages or [])],
        check=True, capture_output=True, text=True,
    )
    return out.stdout.strip()


def source_files(root: Path) -> list[str]:
    skip = {".git", ".kimicode"}
    return sorted(
        str(p) for p in root.rglob("*")
        if p.is_file() and not (set(p.relative_to(root).parts) & skip)
        and not p.relative_to(root).parts[0].startswith(".aider")
    )


class QuietIO(InputOutput):
    def tool_output(self, *args, **kwargs):
        pass


def aider_map(root: Path, files: list[str], tokens: int, model) -> tuple[float, str, RepoMap]:
    io = QuietIO(pretty=False, yes=True, fancy_input=False)
    started = time.perf_counter()
    rm = RepoMap(map_tokens=tokens, root=str(root), main_model=model, io=io)
    text = rm.get_repo_map(chat_files=[], other_files=files)
    return time.perf_counter() - started, text or "", rm


def aider_cache_clear(root: Path) -> None:
    for path in root.glob(".aider.tags.cache.v*"):
        shutil.rmtree(path)


def aider_counts(rm: RepoMap) -> tuple[int, int, int]:
    """(files in the tags cache, files with at least one def, definitions)."""
    files = with_defs = defs = 0
    for key in list(rm.TAGS_CACHE):
        entry = rm.TAGS_CACHE[key]
        files += 1
        n = sum(1 for tag in entry.get("data") or [] if tag.kind == "def")
        defs += n
        with_defs += n > 0
    return files, with_defs, defs


def run_cli(argv: list[str], cwd: Path) -> tuple[float, str]:
    started = time.perf_counter()
    out = subprocess.run(argv, cwd=cwd, check=True, capture_output=True, text=True)
    return time.perf_counter() - started, out.stdout


def median_of(runs: int, action) -> tuple[float, list[float], object]:
    times, last = [], None
    for _ in range(runs):
        seconds, last = action()
        times.append(seconds)
    return statistics.median(times), times, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kimicode", default="/work/main/.venv/bin/kimicode", help="kimicode executable")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--model", default="gpt-4o", help="Aider model whose tokenizer counts the map")
    parser.add_argument("--packages", nargs="+", help="default: bench/index.py's DEFAULT_PACKAGES")
    parser.add_argument("--show", type=int, default=15, help="lines of each map to print")
    parser.add_argument("--keep", help="build the corpus here and keep it (default: a temp dir)")
    args = parser.parse_args()

    load_before = os.getloadavg()
    kimicode = Path(args.kimicode)
    kc_python = kimicode.parent / "python"
    model = aider_models.Model(args.model)
    assert model.token_count("def f(x):\n    return x\n"), "Aider token counting does not work offline"

    tmp = None
    if args.keep:
        root = Path(args.keep)
        root.mkdir(parents=True, exist_ok=False)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="aider-compare-")
        root = Path(tmp.name)
    try:
        summary = build_corpus(kc_python, root, args.packages)
        # Aider's tags cache lives in the corpus; hide it from kimicode as Aider's own
        # .gitignore entry would (kimicode reads .git/info/exclude), so both see the same files.
        with (root / ".git" / "info" / "exclude").open("a") as f:
            f.write(".aider*\n")
        files = source_files(root)
        for path in files:  # same page-cache state for everyone
            Path(path).read_bytes()

        # --- Aider ---
        def aider_cold():
            aider_cache_clear(root)
            seconds, text, _ = aider_map(root, files, args.tokens, model)
            return seconds, text

        def aider_warm():
            seconds, text, rm = aider_map(root, files, args.tokens, model)
            return seconds, (text, rm)

        a_cold, a_cold_all, a_text = median_of(args.runs, aider_cold)
        a_warm, a_warm_all, (a_text_warm, rm) = median_of(args.runs, aider_warm)
        a_files, a_files_defs, a_defs = aider_counts(rm)

        # --- kimicode ---
        cache = root / ".kimicode" / "cache"

        def kc(cmd: list[str], cold: bool):
            def action():
                if cold:
                    shutil.rmtree(cache, ignore_errors=True)
                return run_cli([str(kimicode), *cmd], root)
            return action

        map_cmd = ["map", "--tokens", str(args.tokens)]
        k_start, k_start_all, _ = median_of(args.runs, lambda: run_cli([str(kimicode), "--version"], root))
        k_map_cold, k_map_cold_all, _ = median_of(args.runs, kc(map_cmd, cold=True))
        k_idx_cold, k_idx_cold_all, k_idx_out = median_of(args.runs, kc(["index"], cold=True))
        k_map_warm, k_map_warm_all, k_text = median_of(args.runs, kc(map_cmd, cold=False))
        k_idx_warm, k_idx_warm_all, _ = median_of(args.runs, kc(["index"], cold=False))
        m = re.search(r"(\d+) files.*?\n(\d+) definitions, (\d+) references", k_idx_out, re.S)
        k_files, k_defs, k_refs = (int(g) for g in m.groups()) if m else ("?", "?", "?")
    finally:
        if tmp:
            tmp.cleanup()

    def fmt(times):
        return " ".join(f"{t:.2f}" for t in times)

    def toks(text):
        return model.token_count(text)

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; corpus {root}; "
          f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} "
          f"(other busy processes skew the parallel kimicode index most)")
    print(f"packages | counts: {summary}")
    print(f"source files given to Aider: {len(files)}; map budget {args.tokens} tokens; runs {args.runs}")
    print()
    print(f"{'tool / phase':<40}{'median s':>9}   runs")
    rows = [
        ("aider  repo map, cold (no tags cache)", a_cold, a_cold_all),
        ("aider  repo map, warm (tags cache)", a_warm, a_warm_all),
        ("kimicode --version (start-up only)", k_start, k_start_all),
        ("kimicode map, cold (no cache)", k_map_cold, k_map_cold_all),
        ("kimicode index, cold (no cache)", k_idx_cold, k_idx_cold_all),
        ("kimicode map, warm (cache)", k_map_warm, k_map_warm_all),
        ("kimicode index, warm (nothing changed)", k_idx_warm, k_idx_warm_all),
    ]
    for name, med, times in rows:
        print(f"{name:<40}{med:>9.2f}   {fmt(times)}")
    print()
    print(f"ratio kimicode/aider, cold map end to end : {k_map_cold / a_cold:.2f}")
    print(f"ratio kimicode/aider, cold index vs map   : {k_idx_cold / a_cold:.2f}")
    print(f"ratio kimicode/aider, warm map            : {k_map_warm / a_warm:.2f}")
    print()
    print(f"aider   : {a_files} files in tags cache, {a_files_defs} with defs, {a_defs} definitions; "
          f"map {len(a_text.splitlines())} lines, {toks(a_text)} tokens ({args.model} tokenizer); "
          f"cold and warm maps identical: {a_text == a_text_warm}")
    print(f"kimicode: {k_files} files, {k_defs} definitions, {k_refs} references; "
          f"map {len(k_text.splitlines())} lines, {toks(k_text)} tokens ({args.model} tokenizer)")
    for name, text in (("aider", a_text), ("kimicode", k_text)):
        print(f"\n--- first {args.show} lines of the {name} map ---")
        print("\n".join(text.splitlines()[: args.show]))


if __name__ == "__main__":
    main()
