"""train.oom.auto_plan: start from the micro-batch the planner says fits train.memory_budget."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from lorakit.config.memory import MemorySettings
from lorakit.config.schema import parse_memory_size
from lorakit.plan.estimate import GiB
from lorakit.plan.facts import read_model_config
from lorakit.plan.report import PlanInputs, build_plan, starting_point

log = logging.getLogger(__name__)


def auto_plan(inputs: PlanInputs, memory_budget: str, resolved: Any,
              device_type: str) -> tuple[MemorySettings, str, dict[str, Any]]:
    """The memory settings to start from, what changed (for the attempt log), and the plan for the manifest.

    Raises:
        MemoryBudgetError: the budget cannot hold even the smallest settings.
    """
    budget = parse_memory_size(memory_budget)
    plan = build_plan(inputs, device_type, budget, read_model_config(resolved, inputs.model.revision))
    start = starting_point(plan)
    configured = inputs.memory
    changes = []
    if start.micro_batch_size != configured.micro_batch_size:
        changes.append(f"micro_batch_size {configured.micro_batch_size} -> {start.micro_batch_size}, "
                       f"grad_accum {configured.grad_accum} -> {start.grad_accum}")
    if start.gradient_checkpointing and not configured.gradient_checkpointing:
        changes.append("gradient checkpointing on")
    what = (f"planned for train.memory_budget {memory_budget}: {'; '.join(changes) or 'no change'} "
            f"(estimate {start.estimate.total / GiB:.2f} GiB, as configured {plan.estimate.total / GiB:.2f} GiB)")
    log.info("train.oom.auto_plan: %s", what)
    record = {"budget_gib": round(budget / GiB, 3),
              "configured_estimate_gib": round(plan.estimate.total / GiB, 3),
              "planned_estimate_gib": round(start.estimate.total / GiB, 3),
              "micro_batch_size": start.micro_batch_size, "grad_accum": start.grad_accum,
              "gradient_checkpointing": start.gradient_checkpointing,
              "parts_gib": {p.name: round(p.bytes / GiB, 3) for p in start.estimate.parts}}
    planned = replace(configured, micro_batch_size=start.micro_batch_size, grad_accum=start.grad_accum,
                      gradient_checkpointing=start.gradient_checkpointing)
    return planned, what, record
