"""Which definitions matter most: a personalised PageRank over the reference graph.

Files are nodes; a file that references a name defined in another file gets an edge
to it, weighted by how often it does and by how telling the name is. Files and names
the conversation is about (focus) get the personalisation weight. A definition's rank
is the share of rank flowing into its file through references to its name.
"""

from __future__ import annotations

import builtins
import math
from collections import Counter, defaultdict
from collections.abc import Iterable

from kimicode.index.model import FileTags, Tag

DAMPING = 0.85
ITERATIONS = 40
TOLERANCE = 1e-6  # L1 change of the rank vector; the ordering is stable long before 1e-10
FOCUS_WEIGHT = 10.0  # how much more a focused name or file counts
COMMON_NAME_FILES = 5  # a name defined in more files than this says little about any of them
MAX_DEFINING_FILES = 50  # ... and past this, nothing worth the edges it would cost


def rank_definitions(
    files: Iterable[FileTags], focus_files: set[str] = frozenset(), focus_names: set[str] = frozenset()
) -> list[tuple[float, str, Tag]]:
    """(rank, path, definition) for every definition, best first; ties by path and line."""
    files = list(files)
    defined_in: dict[str, set[str]] = defaultdict(set)
    for file in files:
        for tag in file.tags:
            if tag.kind == "def":
                defined_in[tag.name].add(file.path)
    references = {
        file.path: Counter(tag.name for tag in file.tags if tag.kind == "ref" and tag.name in defined_in)
        for file in files
    }
    referencing_files = Counter(name for counts in references.values() for name in counts)
    weigh = _NameWeights(defined_in, referencing_files, len(files), focus_names)

    edges: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)  # source -> (target, name) -> weight
    for source, counts in references.items():
        for name, count in counts.items():
            if len(defined_in[name]) > MAX_DEFINING_FILES:
                continue  # `__init__`, `main`: an edge to each of hundreds of files says nothing
            weight = weigh(name) * math.sqrt(count) / len(defined_in[name])
            for target in defined_in[name]:
                edges[source][(target, name)] += weight

    nodes = sorted({f.path for f in files})
    rank = _pagerank(nodes, edges, _personalisation(nodes, focus_files))

    flow: Counter[tuple[str, str]] = Counter()
    for source, targets in edges.items():
        total = sum(targets.values())
        for key, weight in targets.items():
            flow[key] += rank[source] * weight / total
    ranked = []
    for file in files:
        for tag in file.tags:
            if tag.kind == "def":
                # A small share of the file's own rank keeps unreferenced definitions of
                # important files (entry points, public API) in the running.
                score = flow[(file.path, tag.name)] + rank[file.path] * 0.01
                # Flow is shared out per file, so a name's weight must apply here too:
                # otherwise a file's one private call would get all its rank.
                score *= weigh(tag.name)
                if file.path in focus_files:
                    score *= FOCUS_WEIGHT
                ranked.append((score, file.path, tag))
    ranked.sort(key=lambda item: (-item[0], item[1], item[2].line, item[2].name))
    return ranked


class _NameWeights:
    """How much a reference to a name says about where it points."""

    def __init__(self, defined_in: dict[str, set[str]], referencing: Counter[str], files: int, focus: set[str]):
        self._defined_in, self._referencing, self._focus = defined_in, referencing, focus
        # A name used by more files than this is probably not (only) ours: `x.isdir()` may be
        # os.path's, `m.match()` re's. Its weight shrinks as it spreads.
        self._spread = max(10.0, files / 50)
        self._cache: dict[str, float] = {}

    def __call__(self, name: str) -> float:
        weight = self._cache.get(name)
        if weight is None:
            weight = self._cache[name] = self._weigh(name)
        return weight

    def _weigh(self, name: str) -> float:
        weight = min(1.0, self._spread / max(self._referencing[name], 1))
        if name in self._focus:
            weight *= FOCUS_WEIGHT
        if name.startswith("_"):
            weight *= 0.1  # private helpers rarely explain a codebase
        if len(self._defined_in.get(name, ())) > COMMON_NAME_FILES:
            weight *= 0.1
        if len(name) < 3 or name in _BUILTINS:
            weight *= 0.1
        return weight


# Names of builtins and of builtin types' methods (Python, JavaScript): a project's own
# `join` or `type` method would otherwise collect every `", ".join(...)` and `type(x)`.
_BUILTINS = frozenset(
    name
    for namespace in (builtins, str, bytes, list, dict, set, int, float, object)
    for name in dir(namespace)
    if not name.startswith("__")
) | frozenset(
    "Array Object String Number Boolean Promise JSON Math Date Error Map Set Symbol RegExp console require "
    "parseInt parseFloat setTimeout clearTimeout setInterval fetch push pop shift unshift slice splice map "
    "filter reduce forEach find some every includes indexOf concat then catch finally toString valueOf "
    "hasOwnProperty log warn error info debug assign freeze entries length apply call bind".split()
)


def _personalisation(nodes: list[str], focus_files: set[str]) -> dict[str, float]:
    base = {node: 1.0 + (FOCUS_WEIGHT * len(nodes) if node in focus_files else 0.0) for node in nodes}
    total = sum(base.values()) or 1.0
    return {node: weight / total for node, weight in base.items()}


def _pagerank(
    nodes: list[str], edges: dict[str, Counter[tuple[str, str]]], personal: dict[str, float]
) -> dict[str, float]:
    """Power iteration over index arrays; rank of files without out-edges goes back by the
    personalisation."""
    index = {node: i for i, node in enumerate(nodes)}
    adjacency: list[tuple[int, list[int], list[float]]] = []
    for source, targets in edges.items():
        merged: Counter[int] = Counter()
        for (target, _name), weight in targets.items():
            merged[index[target]] += weight
        total = sum(merged.values())
        if total > 0:
            order = sorted(merged)
            adjacency.append((index[source], order, [merged[t] / total for t in order]))
    has_out = {source for source, _, _ in adjacency}
    teleport = [personal[node] for node in nodes]
    rank = list(teleport)
    for _ in range(ITERATIONS):
        dangling = sum(rank[i] for i in range(len(nodes)) if i not in has_out)
        new = [(1 - DAMPING + DAMPING * dangling) * p for p in teleport]
        for source, targets, fractions in adjacency:
            share = DAMPING * rank[source]
            for target, fraction in zip(targets, fractions):
                new[target] += share * fraction
        delta = sum(abs(a - b) for a, b in zip(new, rank))
        rank = new
        if delta < TOLERANCE:
            break
    return dict(zip(nodes, rank))
