"""Which definitions matter most: a personalised PageRank over the reference graph.

Files are nodes; a file that references a name defined in another file gets an edge
to it, weighted by how often it does and by how telling the name is. Files and names
the conversation is about (focus) get the personalisation weight. A definition's rank
is the share of rank flowing into its file through references to its name.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable

from kimicode.index.model import FileTags, Tag

DAMPING = 0.85
ITERATIONS = 60
TOLERANCE = 1e-10
FOCUS_WEIGHT = 10.0  # how much more a focused name or file counts
COMMON_NAME_FILES = 5  # a name defined in more files than this says little about any of them


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

    edges: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)  # source -> (target, name) -> weight
    for file in files:
        references = Counter(tag.name for tag in file.tags if tag.kind == "ref" and tag.name in defined_in)
        for name, count in references.items():
            weight = _name_weight(name, len(defined_in[name]), focus_names) * math.sqrt(count)
            for target in defined_in[name]:
                edges[file.path][(target, name)] += weight / len(defined_in[name])

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
                score *= _name_weight(tag.name, len(defined_in[tag.name]), focus_names)
                if file.path in focus_files:
                    score *= FOCUS_WEIGHT
                ranked.append((score, file.path, tag))
    ranked.sort(key=lambda item: (-item[0], item[1], item[2].line, item[2].name))
    return ranked


def _name_weight(name: str, defining_files: int, focus_names: set[str]) -> float:
    weight = 1.0
    if name in focus_names:
        weight *= FOCUS_WEIGHT
    if name.startswith("_"):
        weight *= 0.1  # private helpers rarely explain a codebase
    if defining_files > COMMON_NAME_FILES:
        weight *= 0.1
    if len(name) < 3:
        weight *= 0.1
    return weight


def _personalisation(nodes: list[str], focus_files: set[str]) -> dict[str, float]:
    base = {node: 1.0 + (FOCUS_WEIGHT * len(nodes) if node in focus_files else 0.0) for node in nodes}
    total = sum(base.values()) or 1.0
    return {node: weight / total for node, weight in base.items()}


def _pagerank(
    nodes: list[str], edges: dict[str, Counter[tuple[str, str]]], personal: dict[str, float]
) -> dict[str, float]:
    """Power iteration; rank of files without out-edges goes back by the personalisation."""
    out: dict[str, list[tuple[str, float]]] = {}
    for source, targets in edges.items():
        total = sum(targets.values())
        merged: Counter[str] = Counter()
        for (target, _name), weight in targets.items():
            merged[target] += weight / total
        out[source] = sorted(merged.items())
    rank = dict(personal)
    for _ in range(ITERATIONS):
        dangling = sum(rank[node] for node in nodes if node not in out)
        new = {node: (1 - DAMPING + DAMPING * dangling) * personal[node] for node in nodes}
        for source, targets in out.items():
            share = DAMPING * rank[source]
            for target, fraction in targets:
                new[target] += share * fraction
        delta = sum(abs(new[node] - rank[node]) for node in nodes)
        rank = new
        if delta < TOLERANCE:
            break
    return rank
