"""A sweep file: which config keys to search, over what, judged by which metric.

```yaml
lora.r: [16, 32]                         # a list: these values (a grid axis)
train.lr: {low: 5.0e-5, high: 2.0e-4, log: true}   # a range: floats, or ints when both ends are ints
data.template: [chatml, gemma]           # strings: categorical
metric: exact                            # any evaluation metric a run logs (eval_loss, exact, chrf, typst)
direction: maximize                      # default: minimize for loss, maximize otherwise
sampler: tpe                             # grid | random | tpe
pruner: median                           # none | median | hyperband
seed: 0
```
"""

from __future__ import annotations

import difflib
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lorakit.config.describe import describe_fields
from lorakit.config.load import read_config_file
from lorakit.config.schema import PREFERENCE_METRICS, RunConfig, metric_key
from lorakit.errors import ConfigError

RESERVED = ("metric", "direction", "sampler", "pruner", "seed")
SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("none", "median", "hyperband")


@dataclass(frozen=True)
class Param:
    key: str  # a dotted config key
    values: tuple[Any, ...] = ()  # a list: categorical (the grid's axis)
    low: float | None = None
    high: float | None = None
    log: bool = False

    @property
    def is_range(self) -> bool:
        return not self.values

    @property
    def is_int(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int)


@dataclass(frozen=True)
class SweepSpace:
    params: tuple[Param, ...]
    metric: str  # as logged: eval_loss, eval_exact...
    direction: Literal["minimize", "maximize"]
    sampler: str
    pruner: str
    seed: int
    source: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    def grid(self) -> list[dict[str, Any]]:
        """Every combination of the listed values (a grid needs lists only)."""
        keys = [p.key for p in self.params]
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(p.values for p in self.params))]


def load_space(path: Path, config: RunConfig) -> SweepSpace:
    """Read and check a sweep file against the config it sweeps.

    Raises:
        ConfigError: an unknown key (with a guess), an empty list, low > high, a metric the runs do not log,
            a grid over a range; each one line naming the key.
    """
    raw = read_config_file(path)
    known = {row[0] for row in describe_fields()}
    params = tuple(_param(path, key, value, known) for key, value in raw.items() if key not in RESERVED)
    if not params:
        raise ConfigError(f"{path}: no config key to search; add one, e.g. 'lora.r: [16, 32]'")
    metric = metric_key(str(raw.get("metric", "eval_loss")))
    logged = [metric_key(m) for m in config.train.eval_metrics]
    if config.train.method == "dpo" and "loss" in config.train.eval_metrics:  # held-out pairs' accuracy, margin
        logged += [metric_key(m) for m in PREFERENCE_METRICS]
    if metric not in logged:
        choices = ", ".join(m.removeprefix("eval_") for m in logged)
        raise ConfigError(f"{path}: metric: no run logs {metric.removeprefix('eval_')!r} (the config's "
                          f"train.eval_metrics: {choices}); add it there or choose one of those")
    if not (config.data.eval or config.data.val_size):
        raise ConfigError(f"{path}: metric: {metric} needs validation data; set data.eval or data.val_size")
    stopping = config.train.early_stopping
    if stopping is not None and metric_key(stopping.metric) != metric:
        ours, theirs = metric.removeprefix("eval_"), metric_key(stopping.metric).removeprefix("eval_")
        raise ConfigError(f"{path}: metric: the sweep ranks trials by {ours} but the config stops them early by "
                          f"{theirs} (train.early_stopping.metric), and a trial keeps its best adapter by that one; "
                          f"set metric: {theirs} here, or --set train.early_stopping.metric={ours}")
    lower = metric.endswith(("loss", "perplexity"))
    direction = raw.get("direction", "minimize" if lower else "maximize")
    sampler, pruner = raw.get("sampler", "tpe"), raw.get("pruner", "median")
    for key, value, allowed in (("direction", direction, ("minimize", "maximize")), ("sampler", sampler, SAMPLERS),
                                ("pruner", pruner, PRUNERS)):
        if value not in allowed:
            raise ConfigError(f"{path}: {key}: {value!r} is not one of {', '.join(allowed)}")
    if sampler == "grid" and (ranged := [p.key for p in params if p.is_range]):
        raise ConfigError(f"{path}: sampler grid needs a list of values for every key ({ranged[0]} is a range)")
    return SweepSpace(params, metric, direction, sampler, pruner, int(raw.get("seed", 0)), str(path), raw)


def _param(path: Path, key: str, value: Any, known: set[str]) -> Param:
    if key not in known:
        guess = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
        raise ConfigError(f"{path}: {key}: not a config key" + (f", did you mean {guess[0]!r}?" if guess else
                                                                  "; `lorakit config schema` lists them"))
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{path}: {key}: the list of values is empty")
        return Param(key, tuple(value))
    if isinstance(value, dict) and {"low", "high"} <= set(value):
        low, high = value["low"], value["high"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
            raise ConfigError(f"{path}: {key}: low and high must be numbers (got {low!r}, {high!r})")
        if low > high:
            raise ConfigError(f"{path}: {key}: low ({low}) is above high ({high})")
        if value.get("log") and low <= 0:
            raise ConfigError(f"{path}: {key}: a log range needs low > 0 (got {low})")
        extra = set(value) - {"low", "high", "log"}
        if extra:
            raise ConfigError(f"{path}: {key}: unknown {', '.join(sorted(extra))}; a range takes low, high, log")
        return Param(key, (), low, high, bool(value.get("log", False)))
    raise ConfigError(f"{path}: {key}: give a list of values ([16, 32]) or a range ({{low: 1e-5, high: 1e-3}}) "
                      f"(got {value!r})")


def short_name(key: str) -> str:
    """What a key is called in a trial's run name: lr, r, alpha..."""
    return {"train.lr": "lr", "lora.r": "r", "lora.alpha": "alpha", "lora.dropout": "drop",
            "train.micro_batch_size": "mb", "train.grad_accum": "ga", "data.max_length": "len",
            "train.epochs": "ep", "train.warmup_ratio": "wu", "train.weight_decay": "wd",
            "train.max_steps": "steps"}.get(key, key.rsplit(".", 1)[-1].replace("_", ""))


def value_tag(value: Any) -> str:
    """A parameter value as a run name shows it: 2e-4, 32, chatml."""
    if isinstance(value, float) and not value.is_integer():
        if abs(value) >= 1e-2:
            return f"{value:.3g}"
        mantissa, exponent = f"{value:.1e}".split("e")
        return f"{mantissa.removesuffix('.0')}e{int(exponent)}"
    if isinstance(value, float):
        return str(int(value))
    return "".join(c for c in str(value) if c.isalnum() or c in ".") or "x"


def trial_tag(params: dict[str, Any]) -> str:
    """``lr2e-4-r32``: what a trial's run name adds to the sweep's."""
    return "-".join(f"{short_name(k)}{value_tag(v)}" for k, v in params.items())


def grid_size(space: SweepSpace) -> int:
    return math.prod(len(p.values) for p in space.params)
