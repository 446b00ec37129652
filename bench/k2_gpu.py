"""`kimicode bench` from a plain checkout: a GPU machine with torch and triton, nothing installed.

    python bench/k2_gpu.py kernels|layer|e2e [--json PATH] [--reps N] [--only TEXT] [--tiny]
    python bench/k2_gpu.py ptxas [--arch 90] [--json PATH]     # no GPU needed
    python bench/k2_gpu.py tests [PYTEST ARGS]                # the GPU tests (tests/**/test_*_gpu.py)

The editable install maps the package `kimicode.backends` to the folder `backends/`. Without it,
the mapping is made here, so the benchmark needs only torch and triton (transformers for the one
e2e comparison row; that row says "skipped" without it). typer and rich are never imported.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def map_backends() -> None:
    """Make `import kimicode.backends.k2...` load from ./backends, as the installed package does."""
    sys.path.insert(0, str(ROOT))
    import kimicode  # the repository's folder: an __init__ with nothing but a version

    spec = importlib.util.spec_from_file_location(
        "kimicode.backends", ROOT / "backends" / "__init__.py", submodule_search_locations=[str(ROOT / "backends")]
    )
    backends = importlib.util.module_from_spec(spec)
    sys.modules["kimicode.backends"] = backends
    spec.loader.exec_module(backends)
    kimicode.backends = backends


if __name__ == "__main__":
    map_backends()
    if sys.argv[1:2] == ["tests"]:
        import os

        import pytest

        os.environ["KIMICODE_GPU_TESTS"] = "1"  # compiled kernels, not Triton's interpreter
        # Only the GPU test modules: the others import packages a bare GPU image lacks.
        modules = sorted(str(path) for path in (ROOT / "tests/backends/k2/kernels").glob("test_*_gpu.py"))
        sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", *modules, *sys.argv[2:]]))
    if sys.argv[1:2] == ["ptxas"]:
        from kimicode.backends.k2.kernels import ptxas_report

        sys.exit(ptxas_report.main(sys.argv[2:]))
    from kimicode.backends.k2.kernels import bench

    sys.exit(bench.main(sys.argv[1:]))
