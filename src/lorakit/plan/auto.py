"""train.oom.auto_plan: start from the micro-batch the planner says fits train.memory_budget."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from lorakit.config.memory import MemorySettings
from lorakit.config.schema import RunConfig, parse_memory_size
from lorakit.plan.estimate import GiB
from lorakit.plan.facts import read_model_config
from lorakit.plan.report import build_plan, starting_point

log = logging.getLogger(__name__)


def auto_plan(cfg: RunConfig, resolved: Any, device_type: str) -> tuple[RunConfig, str, dict[str, Any]]:
    """The config to start from, what changed (for the attempt log), and the plan for the manifest.

    Raises:
        MemoryBudgetError: the budget cannot hold even the smallest settings.
    """
    budget = parse_memory_size(cfg.train.memory_budget)  # type: ignore[arg-type]  # the schema requires it
    plan = build_plan(cfg, device_type, budget, read_model_config(resolved, cfg.model.revision))
    start = starting_point(plan)
    train = cfg.train
    changes = []
    if start.micro_batch_size != train.micro_batch_size:
        changes.append(f"micro_batch_size {train.micro_batch_size} -> {start.micro_batch_size}, "
                       f"grad_accum {train.grad_accum} -> {start.grad_accum}")
    if start.gradient_checkpointing and not train.gradient_checkpointing:
        changes.append("gradient checkpointing on")
    what = (f"planned for train.memory_budget {cfg.train.memory_budget}: {'; '.join(changes) or 'no change'} "
            f"(estimate {start.estimate.total / GiB:.2f} GiB, as configured {plan.estimate.total / GiB:.2f} GiB)")
    log.info("train.oom.auto_plan: %s", what)
    record = {"budget_gib": round(budget / GiB, 3),
              "configured_estimate_gib": round(plan.estimate.total / GiB, 3),
              "planned_estimate_gib": round(start.estimate.total / GiB, 3),
              "micro_batch_size": start.micro_batch_size, "grad_accum": start.grad_accum,
              "gradient_checkpointing": start.gradient_checkpointing,
              "parts_gib": {p.name: round(p.bytes / GiB, 3) for p in start.estimate.parts}}
    planned = replace(MemorySettings.of(cfg), micro_batch_size=start.micro_batch_size, grad_accum=start.grad_accum,
                      gradient_checkpointing=start.gradient_checkpointing)
    return planned.applied_to(cfg), what, record
