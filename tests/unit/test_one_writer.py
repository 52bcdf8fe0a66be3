"""The source keeps its promises about who writes what, checked on the syntax tree of every module.

- Only ``lorakit.runs`` writes a run's ``manifest.json`` and ``trainer_log.jsonl`` (``RunFolder`` and
  ``TrainerLog``): no other module opens them for writing, builds a ``Manifest`` or calls its mutators.
- Only ``config/``, ``recipe/``, ``cli/`` and ``sweep/`` take the whole config (``RunConfig``, ``LoadedConfig``):
  everything else gets the part it needs.
- A status is read as a typed outcome: no module outside ``runs/`` digs in ``status_history``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import lorakit

SOURCE = Path(lorakit.__file__).parent
RUN_FILES = {"manifest.json", "trainer_log.jsonl"}
WRITES = {"write_text", "write_bytes", "write_json_atomic", "unlink", "rename", "replace", "touch", "copy",
          "copy2", "copyfile", "move"}
MANIFEST_MUTATORS = {"update", "set_status", "save"}
CONFIG_USERS = {"config", "recipe", "cli", "sweep"}
WHOLE_CONFIG = ("RunConfig", "LoadedConfig")


def modules(outside: set[str]) -> list[tuple[str, ast.Module]]:
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        relative = path.relative_to(SOURCE)
        if relative.parts[0] not in outside:
            found.append((relative.as_posix(), ast.parse(path.read_text(encoding="utf-8"))))
    return found


def names_run_file(node: ast.AST, tainted: set[str]) -> bool:
    """The expression mentions "manifest.json" / "trainer_log.jsonl", or a name assigned from one."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and sub.value in RUN_FILES:
            return True
        if isinstance(sub, ast.Name) and sub.id in tainted:
            return True
    return False


def run_file_writes(tree: ast.Module) -> list[str]:
    found = []
    for function in [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))]:
        tainted: set[str] = set()
        for node in ast.walk(function):
            if isinstance(node, ast.Assign) and names_run_file(node.value, tainted):
                tainted.update(t.id for t in node.targets if isinstance(t, ast.Name))
        for node in ast.walk(function):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            mode = next((a.value for a in [*node.args[1:2], *(k.value for k in node.keywords if k.arg == "mode")]
                         if isinstance(a, ast.Constant) and isinstance(a.value, str)), "r")
            opens_for_writing = name == "open" and any(c in mode for c in "wax+")
            if (name in WRITES or opens_for_writing) and names_run_file(node, tainted):
                found.append(f"line {node.lineno}: {ast.unparse(node)[:100]}")
    return found


def manifest_mutations(tree: ast.Module) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "lorakit.runs.manifest" and \
                any(a.name == "Manifest" for a in node.names):
            found.append(f"line {node.lineno}: imports Manifest (open runs with RunFolder)")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in MANIFEST_MUTATORS and "manifest" in ast.unparse(node.func.value).lower():
            found.append(f"line {node.lineno}: {ast.unparse(node)[:100]}")
        if isinstance(node, (ast.Assign, ast.AugAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Subscript) and "manifest" in ast.unparse(target.value).lower():
                    found.append(f"line {node.lineno}: {ast.unparse(target)}")
    return found


@pytest.mark.parametrize(("module", "tree"), modules(outside={"runs"}), ids=lambda v: v if isinstance(v, str) else "")
def test_only_runs_writes_a_run_folders_manifest_and_log(module, tree):
    assert run_file_writes(tree) == [], f"{module} writes a run file itself: use RunFolder / TrainerLog"
    assert manifest_mutations(tree) == [], f"{module} changes a manifest behind RunFolder's back"


@pytest.mark.parametrize(("module", "tree"), modules(outside={"runs"}), ids=lambda v: v if isinstance(v, str) else "")
def test_statuses_are_read_as_typed_outcomes(module, tree):
    digs = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value == "status_history"]
    assert digs == [], f"{module} reads status_history raw (lines {digs}): use RunFolder.outcome / outcome_of"


@pytest.mark.parametrize(("module", "tree"), modules(outside=CONFIG_USERS),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_the_whole_config_is_a_parameter_only_where_it_is_read(module, tree):
    takers = whole_config_takers(tree)
    assert takers == [], f"{module}: {', '.join(takers)} take the whole config; hand them its section or spec"


def whole_config_takers(tree: ast.Module) -> list[str]:
    takers = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
            if any(a.annotation is not None and any(c in ast.unparse(a.annotation) for c in WHOLE_CONFIG)
                   for a in arguments):
                takers.append(f"{node.name} (line {node.lineno})")
    return takers


def test_the_checks_find_what_they_look_for():
    # The same checks on code that breaks each rule, so a check that went blind fails here.
    bad = ast.parse('''
from lorakit.runs.manifest import Manifest
def f(run_dir, run):
    path = run_dir / "trainer_log.jsonl"
    with path.open("a") as out:
        out.write("{}")
    (run_dir / "manifest.json").write_text("{}")
    run.manifest.update(status="x")
    run.manifest.data["slurm"] = {}
''')
    assert len(run_file_writes(bad)) == 2
    assert len(manifest_mutations(bad)) == 3
    assert whole_config_takers(ast.parse("def f(x: int, cfg: LoadedConfig | None = None): pass")) == ["f (line 1)"]
