"""Does the export answer as the adapter does? Next-token logits of the GGUF against the PEFT model, at every
position of a few fixed conversations wrapped the way the run was trained."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from lorakit.data.formats import Turn

CHECK_PAIRS = (
    ("\\frac{a+b}{2} \\le \\sqrt{ab}", "(a + b)/2 <= sqrt(a b)"),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("def add(a, b):", "    return a + b"),
    ("Ein kurzer Satz auf Deutsch, bitte.", "Gerne: Die Sonne scheint heute."),
)
# Top-1 agreement each format must reach. f16 rounds every weight to an 11-bit mantissa (relative error
# about 5e-4), which moves logits by about 1e-2: only near-ties may flip, hence 99% (the bar). q8_0
# keeps 8 bits per weight and q4_k_m about 4.5, so more near-ties flip: 95% and 80%.
TOP1_NEEDED = {"f16": 0.99, "q8_0": 0.95, "q4_k_m": 0.80}
# A merged model folder (export --merge --dtype): float32 differs from the adapter only by the order of its sums,
# float16 as f16 does; bfloat16 keeps an 8-bit mantissa (relative error about 4e-3 a weight, as coarse as q8_0's
# 8-bit blocks), so its bar is q8_0's.
MERGED_AS = {"float32": "f16", "float16": "f16", "bfloat16": "q8_0"}
# The verdict counts the positions where the adapter's choice is clear: its top two logits this far apart or more.
# Below, the format's own rounding may flip the choice, and either token is as much the adapter's answer: SmolLM2's
# DPO adapter at q8_0 flipped 12 of 206 positions, every one with its top two within 0.26 of each other, while q8_0
# moved the logits by 0.25 on average. A broken export (a tensor transposed, a wrong scale) flips clear choices.
NEAR_TIE = {"f16": 0.05, "q8_0": 0.5, "q4_k_m": 0.5}


@dataclass(frozen=True)
class CheckResult:
    engine: str
    positions: int
    top1_agreement: float
    max_abs_diff: float  # largest logit difference at any position
    mean_abs_diff: float
    needed: float
    hint: str = ""
    clear_positions: int = 0  # where the adapter's top two logits are NEAR_TIE or more apart
    clear_agreement: float = 1.0  # top-1 agreement there: the verdict
    near_tie: float = 0.0

    @property
    def passed(self) -> bool:
        return self.clear_agreement >= self.needed

    def line(self) -> str:
        verdict = "ok" if self.passed else f"FAILED (needs {self.needed:.0%}){self.hint}"
        return (f"check ({self.engine}, {self.positions} positions): top-1 identical on {self.top1_agreement:.1%} "
                f"({self.clear_agreement:.1%} of the {self.clear_positions} where the adapter's top two differ by "
                f"{self.near_tie:g} or more), logits differ by {self.mean_abs_diff:.4f} on average, "
                f"{self.max_abs_diff:.4f} at most: {verdict}")


def check_sequences(adapter: Any) -> list[list[int]]:
    """Token ids of the fixed conversations: the run's prompt wrapping, then an answer."""
    sequences = []
    for question, answer in CHECK_PAIRS:
        turns = adapter.shape.turns(question)
        role = "text" if turns[-1].role == "text" else "assistant"
        ids, _ = adapter.encoder.encode([*turns, Turn(role, answer, train=True)])
        sequences.append(ids[: adapter.max_length])
    return sequences


def adapter_logits(adapter: Any, sequences: list[list[int]]) -> list[np.ndarray]:
    import torch

    with torch.inference_mode():
        return [adapter.model(torch.tensor([ids], device=adapter.device)).logits[0].float().cpu().numpy()
                for ids in sequences]


def llamacpp_logits(model: Path, lora: Path | None, sequences: list[list[int]]) -> list[np.ndarray]:
    from lorakit.infer.llamacpp_lib import open_gguf

    llm = open_gguf(model, lora, context=max(512, max(len(s) for s in sequences)), logits_all=True)
    out = []
    for ids in sequences:
        llm.reset()
        llm.eval(ids)
        out.append(np.array(llm.scores[: len(ids)], dtype=np.float32))
    return out


def transformers_logits(model: Path, sequences: list[list[int]]) -> list[np.ndarray]:
    """Logits of ``model`` (a GGUF file, or a model folder) through transformers, computed in float32."""
    import torch
    from transformers import AutoModelForCausalLM

    where = {"pretrained_model_name_or_path": str(model)} if model.is_dir() else {
        "pretrained_model_name_or_path": str(model.parent), "gguf_file": model.name}
    loaded = AutoModelForCausalLM.from_pretrained(**where, dtype=torch.float32).eval()
    with torch.inference_mode():
        return [loaded(torch.tensor([ids])).logits[0].float().numpy() for ids in sequences]


def compare(expected: list[np.ndarray], got: list[np.ndarray], engine: str, quant: str) -> CheckResult:
    exp, found = np.concatenate(expected), np.concatenate(got)
    width = min(exp.shape[1], found.shape[1])  # a vocabulary padded for the GPU has rows no token uses
    exp, found = exp[:, :width], found[:, :width]
    diff = np.abs(exp - found)
    same = exp.argmax(-1) == found.argmax(-1)
    top_two = np.sort(exp, axis=-1)[:, -2:]
    clear = (top_two[:, 1] - top_two[:, 0]) >= NEAR_TIE[quant]
    clear_agreement = float(same[clear].mean()) if clear.any() else float(same.mean())
    # Measured on Gemma-3 270M: merged and re-quantised to q4_k_m, 51% of top-1 tokens kept; its base at q4_k_m
    # with the adapter GGUF applied in llama.cpp, 93% (the base's weights were already on that grid).
    hint = "" if quant != "q4_k_m" else (
        "; small models lose much when merged weights are re-quantised to 4 bits: try --quant q8_0, or "
        "--adapter-only --quant q4_k_m (the adapter stays float32 beside a 4-bit base)")
    return CheckResult(engine, len(exp), float(same.mean()), float(diff.max()), float(diff.mean()), TOP1_NEEDED[quant],
                       hint, int(clear.sum()), clear_agreement, NEAR_TIE[quant])


def check_export(ref: str, model: Path, lora: Path | None, quant: str, runs_dir: Path = Path("runs")) -> CheckResult:
    """The GGUF (``model``, or the base ``model`` with the adapter GGUF ``lora``) against the run's adapter;
    through llama.cpp when it is installed, else through transformers' GGUF loader (merged files only)."""
    from lorakit.infer.load import load_adapter

    adapter = load_adapter(ref, runs_dir, device="cpu")
    sequences = check_sequences(adapter)
    expected = adapter_logits(adapter, sequences)
    del adapter
    from lorakit.infer.llamacpp_lib import has_llama_cpp, require_llama_cpp

    if has_llama_cpp():
        return compare(expected, llamacpp_logits(model, lora, sequences), "llama.cpp", quant)
    if lora is not None:
        require_llama_cpp("--check of an adapter GGUF")
    return compare(expected, transformers_logits(model, sequences), "transformers", quant)


def check_merged(ref: str, folder: Path, dtype: str, runs_dir: Path = Path("runs")) -> CheckResult:
    """The merged model folder as written (read back from disk, computed in float32) against the run's adapter."""
    from lorakit.infer.load import load_adapter

    adapter = load_adapter(ref, runs_dir, device="cpu")
    sequences = check_sequences(adapter)
    expected = adapter_logits(adapter, sequences)
    del adapter
    result = compare(expected, transformers_logits(folder, sequences), "transformers", MERGED_AS[dtype])
    return replace(result, engine=f"transformers, {dtype}")
