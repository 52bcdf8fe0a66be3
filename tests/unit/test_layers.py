"""Packages import one way: no cycle between any two of lorakit's packages (a lower one never imports the one that
drives it), checked on every module's imports, lazy ones inside functions included."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import lorakit

SOURCE = Path(lorakit.__file__).parent


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in SOURCE.rglob("*.py"):
        relative = path.relative_to(SOURCE)
        package = relative.parts[0] if len(relative.parts) > 1 else relative.stem
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lorakit."):
                imported = node.module.split(".")[1]
                if imported != package:
                    graph[package].add(imported)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found = []

    def walk(path: list[str]) -> None:
        for nxt in sorted(graph.get(path[-1], ())):
            if nxt == path[0]:
                found.append([*path, nxt])
            elif nxt not in path and nxt > path[0]:  # each cycle once, from its smallest name
                walk([*path, nxt])

    for start in sorted(graph):
        walk([start])
    return found


def test_no_two_packages_import_each_other_even_through_others():
    assert cycles(package_graph()) == []


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
