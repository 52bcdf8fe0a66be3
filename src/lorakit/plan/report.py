"""A memory plan for a run config: the breakdown, what fits a budget, and the settings to start from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lorakit.config.memory import MemorySettings
from lorakit.config.schema import LoraSection, ModelSection
from lorakit.errors import MemoryBudgetError
from lorakit.plan.estimate import Estimate, Fit, GiB, MemorySetup, estimate_memory, fit_budget, largest_divisor, options
from lorakit.plan.facts import ModelFacts, load_model_config, measure_facts
from lorakit.plan.lengths import DataLengths

PRESET_BUDGETS = (4, 8, 16, 24)  # GiB, when no budget is given: the sizes users write presets for


@dataclass(frozen=True)
class MemoryPlan:
    facts: ModelFacts
    estimate: Estimate  # the config as written
    grad_accum: int
    budget: float | None
    fits: tuple[Fit, ...]  # per option (as configured, checkpointing, 4-bit...), for the budget


@dataclass(frozen=True)
class StartingPoint:
    """Where auto_plan starts: the configured effective batch, cut to fit."""

    micro_batch_size: int
    grad_accum: int
    gradient_checkpointing: bool
    estimate: Estimate


def device_default() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class PlanInputs:
    """What the planner reads of a run's config (``recipe``/``cli`` build it with ``PlanInputs.of``)."""

    model: ModelSection
    lora: LoraSection
    memory: MemorySettings
    data: DataLengths | None = None  # the training data's real lengths, when read

    @classmethod
    def of(cls, config: Any, data: DataLengths | None = None) -> PlanInputs:
        """From a RunConfig (and its training data's lengths, when known)."""
        return cls(config.model, config.lora, MemorySettings.of(config), data)


def setup_for(inputs: PlanInputs, device: str) -> MemorySetup:
    dtype = inputs.model.dtype
    weight_bytes = 4 if dtype == "float32" or (dtype == "auto" and device == "cpu") else 2
    return MemorySetup(device, inputs.memory, weight_bytes, inputs.model.quantization, inputs.data)


def build_plan(inputs: PlanInputs, device: str | None = None, budget: float | None = None,
               model_config: Any = None) -> MemoryPlan:
    """Estimate the run's peak memory on ``device`` and, with a budget, what fits it.

    ``model_config`` (a transformers config) saves finding and reading it again when the caller has it.

    Raises:
        ModelError: the model's config cannot be read.
        MemoryBudgetError: the budget cannot hold the fixed parts (framework, weights, adapter).
    """
    device = device or device_default()
    facts = measure_facts(model_config or load_model_config(inputs.model), inputs.lora, inputs.memory.max_length,
                          inputs.model.name_or_path)
    setup = setup_for(inputs, device)
    estimate = estimate_memory(facts, setup)
    fits: tuple[Fit, ...] = ()
    if budget is not None:
        fits = tuple(fit_budget(facts, s, budget) for s in options(setup))
        cheapest = min(fits, key=lambda f: f.estimate.fixed)
        if budget < cheapest.estimate.fixed:
            raise MemoryBudgetError(_too_small(budget, cheapest.estimate))
    return MemoryPlan(facts, estimate, inputs.memory.grad_accum, budget, fits)


def _too_small(budget: float, estimate: Estimate) -> str:
    parts = " + ".join(f"{p.name} {p.bytes / GiB:.2f}" for p in estimate.parts if not p.per_token)
    return (f"a memory budget of {budget / GiB:.2f} GiB cannot hold this run: {parts} = "
            f"{estimate.fixed / GiB:.2f} GiB before any activations; raise the "
            f"budget, or use a smaller model, model.quantization: nf4 (CUDA), or a smaller train.loss_chunk_tokens")


def starting_point(plan: MemoryPlan) -> StartingPoint:
    """The largest micro-batch that divides the effective batch and fits, checkpointing only if needed.

    4-bit loading is reported by the plan but never chosen here: it changes the model's numerics.

    Raises:
        MemoryBudgetError: not even micro-batch 1 fits with checkpointing.
    """
    effective = plan.estimate.setup.micro_batch_size * plan.grad_accum
    for fit in plan.fits:
        if fit.setup.quantization != plan.estimate.setup.quantization:
            continue
        size = largest_divisor(effective, fit.micro_batch_size)
        if size:
            setup = fit.setup.changed(micro_batch_size=size)
            return StartingPoint(size, effective // size, setup.gradient_checkpointing,
                                 estimate_memory(plan.facts, setup))
    last = plan.fits[-1] if plan.fits else None
    needs = estimate_memory(plan.facts, (last.setup if last else plan.estimate.setup).changed(micro_batch_size=1))
    raise MemoryBudgetError(f"a memory budget of {(plan.budget or 0) / GiB:.2f} GiB cannot hold even one example "
                            f"of data.max_length {plan.estimate.setup.max_length}: {needs.setup.describe()} needs "
                            f"{needs.total / GiB:.2f} GiB; lower data.max_length or lora.r, or raise the budget")


def render_plan(plan: MemoryPlan) -> str:
    """The plan as text: breakdown, then what fits (the budget, or a few common sizes)."""
    est = plan.estimate
    lines = [f"# {plan.facts.name}: {plan.facts.base_params / 1e6:.0f}M parameters, {plan.facts.num_layers} "
             f"layers; adapter {plan.facts.adapter_params / 1e6:.2f}M parameters",
             f"# as configured on {est.setup.device}: {est.setup.describe()}, grad_accum {plan.grad_accum}",
             f"# {_data_line(est.setup.data)}", ""]
    width = max(len(p.name) for p in est.parts)
    lines += [f"  {p.name:<{width}}  {p.bytes / GiB:7.2f} GiB   {p.note}" for p in est.parts]
    lines += [f"  {'peak (estimate)':<{width}}  {est.total / GiB:7.2f} GiB", ""]
    if plan.budget is None:
        lines.append("# what fits common budgets (micro-batch with this data / longest example at micro-batch 1):"
                     if est.setup.data else
                     "# what fits common budgets (micro-batch at this max_length / longest example at micro-batch 1):")
        setups = options(est.setup)
        lines.append("  budget  " + "  ".join(f"{_option_name(s):>26}" for s in setups))
        for gib in PRESET_BUDGETS:
            fits = [fit_budget(plan.facts, s, gib * GiB) for s in setups]
            lines.append(f"  {gib:>3} GiB " + "  ".join(f"{_fit_cell(f):>26}" for f in fits))
        return "\n".join(lines)
    fits_as_is = est.total <= plan.budget
    lines.append(f"# budget {plan.budget / GiB:.2f} GiB: the config as written "
                 f"{'fits' if fits_as_is else 'does NOT fit'} ({est.total / GiB:.2f} GiB)")
    for fit in plan.fits:
        lines.append(f"  {_option_name(fit.setup):>26}: {_fit_cell(fit)}")
    try:
        start = starting_point(plan)
    except MemoryBudgetError as e:
        lines.append(f"# {e}")
    else:
        lines += ["# start from (same effective batch; train.oom.auto_plan does this for you):",
                  f"  --set train.micro_batch_size={start.micro_batch_size} --set train.grad_accum={start.grad_accum}"
                  + (" --set train.gradient_checkpointing=true" if start.gradient_checkpointing else "")
                  + f"   # {start.estimate.total / GiB:.2f} GiB"]
    return "\n".join(lines)


def _data_line(data: DataLengths | None) -> str:
    if data is None:
        return "every row priced at max_length (the training data was not read)"
    return f"priced from the training data: {data.describe()}"


def _option_name(setup: MemorySetup) -> str:
    name = "checkpointing" if setup.gradient_checkpointing else "no checkpointing"
    return f"{name} + nf4" if setup.quantization == "nf4" else name


def _fit_cell(fit: Fit) -> str:
    if fit.max_length == 0:
        return "does not fit"
    batch = f"mb {fit.micro_batch_size}" if fit.micro_batch_size else f"mb 0 (< {fit.setup.max_length} tokens)"
    return f"{batch} / {fit.max_length} tokens"
