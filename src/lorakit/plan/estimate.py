"""Peak training memory as a sum of parts, and the largest micro-batch and length that fit a budget.

The estimate is linear in the tokens of one micro-batch: ``micro_batch_size x max_length`` (the
worst case: every row full), or, when the training data is known, the largest micro-batch its
real lengths make (``lorakit.plan.lengths``). So "what fits" is a token count solved directly.

On the CPU the figure is peak resident memory (RSS). glibc keeps freed blocks of up to 32 MiB
resident for reuse, and the temporaries a forward pass frees between the tensors it keeps are
seldom reused in time, so RSS grows faster than the tensors autograd saves. That retention is a
measured factor (``CPU_RETAINED*``, calibrated with ``bench/memory_plan.py`` on SmolLM2-135M
and Gemma-3 270M, docs/benchmarks.md). On a GPU the figure is device memory: PyTorch's caching
allocator plus the CUDA context; its constants are from PyTorch's documented behaviour and are
not verified on a GPU yet.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from lorakit.config.memory import MemorySettings
from lorakit.plan.facts import ModelFacts
from lorakit.plan.lengths import DataLengths

GiB = 2**30
ADAM_COPIES = 4  # adapter weight, gradient, and AdamW's two moments, all float32
NF4_BYTES = 0.5 + 1 / 64 * 0.5 + 4 / (64 * 256)  # 4-bit weights, 8-bit absmax per 64, float32 per 256 of those
FRAMEWORK = {"cpu": 0.7 * GiB, "cuda": 0.5 * GiB}  # CPU: Python, torch, transformers, tokenizer; GPU: CUDA context
# Fitted to the peak RSS of 4-step runs (bench/memory_plan.py): resident memory creeps up over the
# first steps as the heap fragments, so a one-step probe would read low.
CPU_RETAINED = 1.06  # x saved activations: freed temporaries glibc keeps resident
CPU_RETAINED_CHECKPOINTED = 0.66  # x the activations checkpointing avoids saving
CUDA_ALLOCATOR_SLACK = 0.10  # x activations: block rounding in the caching allocator
LENGTH_STEP = 64


@dataclass(frozen=True)
class MemorySetup:
    """What decides peak memory: the run's memory settings (the one type the ladder and resume use too), and
    where and how the base weights are held."""

    device: str  # cpu | cuda
    memory: MemorySettings
    weight_bytes: int  # per base parameter: 4 float32, 2 bf16/fp16
    quantization: str = "none"  # none | nf4
    data: DataLengths | None = None  # the training data's real lengths, when known

    @property
    def micro_batch_size(self) -> int:
        return self.memory.micro_batch_size

    @property
    def max_length(self) -> int:
        return self.memory.max_length

    @property
    def gradient_checkpointing(self) -> bool:
        return self.memory.gradient_checkpointing

    @property
    def loss_chunk_tokens(self) -> int:
        return self.memory.loss_chunk_tokens

    def changed(self, **changes: Any) -> MemorySetup:
        """This setup with some fields changed, memory settings (micro_batch_size, ...) or not (quantization)."""
        memory = {k: v for k, v in changes.items() if k in MemorySettings.KEYS}
        own = {k: v for k, v in changes.items() if k not in memory}
        return replace(self, memory=replace(self.memory, **memory), **own)

    @property
    def tokens(self) -> int:
        """Tokens of the largest micro-batch: from the data when known, else every row full."""
        if self.data is not None:
            return self.data.tokens(self.micro_batch_size, self.max_length)
        return self.micro_batch_size * self.max_length

    def describe(self) -> str:
        parts = [f"micro-batch {self.micro_batch_size} x {self.max_length} tokens"
                 + (f" (largest real one {self.tokens})" if self.data is not None else "")]
        parts.append("checkpointing" if self.gradient_checkpointing else "no checkpointing")
        if self.quantization != "none":
            parts.append(self.quantization)
        return ", ".join(parts)


@dataclass(frozen=True)
class Part:
    name: str
    bytes: float
    note: str
    per_token: bool = False  # grows with the tokens of a micro-batch


@dataclass(frozen=True)
class Estimate:
    """Peak memory as parts; ``fixed`` does not grow with tokens, ``per_token`` (bytes per token) does."""

    setup: MemorySetup
    parts: tuple[Part, ...]
    per_token: float

    @property
    def total(self) -> float:
        return sum(p.bytes for p in self.parts)

    @property
    def fixed(self) -> float:
        return sum(p.bytes for p in self.parts if not p.per_token)

    def tokens_within(self, budget: float) -> int:
        """The most tokens per micro-batch that fit ``budget`` (0 when not even the fixed parts fit)."""
        return max(0, int((budget - self.fixed) // self.per_token)) if budget > self.fixed else 0


def estimate_memory(facts: ModelFacts, setup: MemorySetup) -> Estimate:
    """The parts of peak memory for training ``facts``' model with ``setup``."""
    device = setup.device
    if setup.quantization == "nf4":
        # peft's prepare_model_for_kbit_training upcasts everything it does not quantize to float32.
        weights = facts.linear_params * NF4_BYTES + (facts.base_params - facts.linear_params) * 4
        rest = facts.base_params - facts.linear_params
        weight_note = f"{facts.linear_params / 1e6:.0f}M in 4-bit NF4, {rest / 1e6:.0f}M float32"
    else:
        weights = facts.base_params * setup.weight_bytes
        weight_note = f"{facts.base_params / 1e6:.0f}M x {setup.weight_bytes} bytes"
    adapter = facts.adapter_params * 4 * ADAM_COPIES
    logit_buffers = 2 if facts.logit_softcap else 1  # the softmax is built in place (+ the tanh kept for its grad)
    head = min(setup.loss_chunk_tokens, setup.tokens) * facts.vocab_size * 4 * logit_buffers
    scale = 1.0 if setup.weight_bytes == 4 and setup.quantization == "none" else 0.5  # bf16/fp16 compute
    full = facts.num_layers * facts.activations.per_layer + facts.activations.outside
    if setup.gradient_checkpointing:
        kept = facts.num_layers * facts.checkpointed.per_layer + facts.checkpointed.outside
        per_token_act = (kept + facts.activations.per_layer) * scale  # + one layer recomputed in backward
        act_note = "layer inputs kept, one layer recomputed at a time"
        avoided = facts.num_layers * facts.activations.per_layer * scale
    else:
        per_token_act = full * scale
        act_note = "saved for backward, every layer"
        avoided = 0.0
    if device == "cpu":
        slack = CPU_RETAINED * per_token_act + CPU_RETAINED_CHECKPOINTED * avoided
        slack_name, slack_note = "allocator retention", "freed temporaries glibc keeps resident"
    else:
        slack = CUDA_ALLOCATOR_SLACK * per_token_act
        slack_name, slack_note = "allocator slack", "caching allocator block rounding"
    tokens = setup.tokens
    parts = (
        Part("framework", FRAMEWORK[device], "Python, torch, tokenizer and data" if device == "cpu"
             else "CUDA context and kernels"),
        Part("base weights", weights, weight_note),
        Part("adapter + grads + AdamW", adapter, f"{facts.adapter_params / 1e6:.2f}M x {ADAM_COPIES} float32"),
        Part("loss chunk", head, f"{min(setup.loss_chunk_tokens, tokens)} x {facts.vocab_size} logits"),
        Part("activations", tokens * per_token_act,
             f"{tokens} tokens x {per_token_act / 1024:.0f} KiB ({act_note})", per_token=True),
        Part(slack_name, tokens * slack, slack_note, per_token=True),
    )
    return Estimate(setup, parts, per_token=per_token_act + slack)


@dataclass(frozen=True)
class Fit:
    """What fits a budget under one setup: the largest micro-batch at its max_length, the longest length at 1."""

    setup: MemorySetup
    estimate: Estimate
    micro_batch_size: int  # 0: not even one example of max_length fits
    max_length: int  # at micro-batch 1, a multiple of LENGTH_STEP; 0: nothing fits


def fit_budget(facts: ModelFacts, setup: MemorySetup, budget: float) -> Fit:
    # The head term depends on tokens only below loss_chunk_tokens; price it at a full chunk.
    estimate = estimate_memory(facts, setup)
    pricing = estimate_memory(facts, replace(setup, data=None).changed(
        micro_batch_size=1, max_length=max(setup.max_length, setup.loss_chunk_tokens)))
    tokens = pricing.tokens_within(budget)
    length = min(tokens // LENGTH_STEP * LENGTH_STEP, facts.max_position // LENGTH_STEP * LENGTH_STEP)
    return Fit(setup, estimate, micro_batch_size=_largest_batch(setup, tokens), max_length=length)


def _largest_batch(setup: MemorySetup, tokens: int) -> int:
    """The largest micro-batch whose tokens stay within ``tokens``: real lengths when known, else full rows."""
    if setup.data is None:
        return tokens // setup.max_length
    return setup.data.largest_batch_within(tokens, setup.max_length)


def options(setup: MemorySetup) -> list[MemorySetup]:
    """The setup as given, then with checkpointing, then (on a GPU) 4-bit, then both."""
    variants = [setup]
    if not setup.gradient_checkpointing:
        variants.append(setup.changed(gradient_checkpointing=True))
    if setup.device == "cuda" and setup.quantization == "none":
        variants += [v.changed(quantization="nf4") for v in list(variants)]
    return variants


def largest_divisor(n: int, limit: int) -> int:
    """The largest divisor of ``n`` that is at most ``limit`` (0 when limit < 1)."""
    return max((d for d in range(1, min(n, limit) + 1) if n % d == 0), default=0)
