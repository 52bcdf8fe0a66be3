"""How runs relate: what differs between two, and the chain of runs one continued from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorakit.config.load import flatten_keys
from lorakit.runs.catalog import read_manifest

MISSING = "<unset>"


@dataclass
class RunDiff:
    config: list[tuple[str, Any, Any]] = field(default_factory=list)  # key, a, b
    data: list[tuple[str, str, str]] = field(default_factory=list)  # file, sha256 a, sha256 b
    code: list[tuple[str, str, str]] = field(default_factory=list)  # repo, commit a, commit b
    base_model: tuple[str, str] | None = None
    metrics: list[tuple[str, float | None, float | None, float | None]] = field(default_factory=list)


def _commit(state: dict[str, Any]) -> str:
    if "error" in state:
        return f"({state['error']})"
    return f"{state.get('commit', '?')[:12]}{' dirty' if state.get('dirty') else ''}"


def _data_by_name(files: dict[str, str]) -> dict[str, str]:
    # Runs started from different folders record the same file under different relative paths.
    return {Path(path).name: digest for path, digest in files.items()}


def diff_runs(a_dir: Path, b_dir: Path) -> RunDiff:
    """Config keys, data files, code commits, base model and metrics that differ from run A to run B."""
    a, b = read_manifest(a_dir), read_manifest(b_dir)
    out = RunDiff()
    ca, cb = flatten_keys(a.get("config", {})), flatten_keys(b.get("config", {}))
    out.config = [(k, ca.get(k, MISSING), cb.get(k, MISSING)) for k in sorted(ca.keys() | cb.keys())
                  if ca.get(k, MISSING) != cb.get(k, MISSING)]
    da, db = _data_by_name(a.get("data_files", {})), _data_by_name(b.get("data_files", {}))
    out.data = [(name, da.get(name, MISSING), db.get(name, MISSING)) for name in sorted(da.keys() | db.keys())
                if da.get(name) != db.get(name)]
    code_a, code_b = a.get("code", {}), b.get("code", {})
    for repo in sorted(code_a.keys() | code_b.keys()):
        left = _commit(code_a[repo]) if repo in code_a else MISSING
        right = _commit(code_b[repo]) if repo in code_b else MISSING
        if left != right:
            out.code.append((repo, left, right))
    base_a, base_b = a.get("base_model") or {}, b.get("base_model") or {}
    if (base_a.get("sha256"), base_a.get("name")) != (base_b.get("sha256"), base_b.get("name")):
        out.base_model = (base_a.get("name", MISSING), base_b.get("name", MISSING))
    ma, mb = a.get("metrics") or {}, b.get("metrics") or {}
    for key in sorted(ma.keys() | mb.keys()):
        va, vb = ma.get(key), mb.get(key)
        if not all(isinstance(v, (int, float)) or v is None for v in (va, vb)) or va == vb:
            continue
        delta = vb - va if va is not None and vb is not None else None
        out.metrics.append((key, va, vb, delta))
    return out


@dataclass(frozen=True)
class LineageEntry:
    name: str
    path: str
    status: str
    is_run: bool  # False: a plain PEFT adapter folder at the root of the chain
    data_files: dict[str, str]
    steps: int | None
    metrics: dict[str, Any]


def lineage(run_dir: Path) -> list[LineageEntry]:
    """The run, then the run (or adapter folder) it continued from, and so on to the root."""
    chain: list[LineageEntry] = []
    seen: set[Path] = set()
    current: Path | None = run_dir
    while current is not None and current.resolve() not in seen:
        seen.add(current.resolve())
        if not (current / "manifest.json").is_file():
            chain.append(LineageEntry(current.name, str(current), "adapter folder" if current.is_dir() else "missing",
                                      False, {}, None, {}))
            break
        m = read_manifest(current)
        metrics = m.get("metrics") or {}
        chain.append(LineageEntry(m.get("name", current.name), str(current), m.get("status", "?"), True,
                                  m.get("data_files", {}), metrics.get("train_steps"), metrics))
        parent = m.get("parent")
        current = Path(parent["path"]) if parent else None
    return chain
