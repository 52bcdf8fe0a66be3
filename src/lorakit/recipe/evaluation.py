"""During training: evaluations (loss, and the generated metrics exactly as ``lorakit eval`` computes them),
samples from ``train.sample_prompts``, and the best adapter so far.

The generated metrics and the samples are computed once, by the main process, on the adapter in
eval mode; the validation loss is shared out over every process.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorakit.atomic import save_shared
from lorakit.config.schema import GENERATED_METRICS
from lorakit.data.formats import Turn
from lorakit.data.prompt_shape import PromptShape
from lorakit.infer.evaluate import EvalCase, case_turns, cases_from_conversations, score
from lorakit.infer.generate import GENERATE_LANES, check_context
from lorakit.infer.load import LoadedAdapter
from lorakit.recipe import baseline_memo
from lorakit.recipe.session import Session
from lorakit.runs.summary import SAMPLES_DIR, VAL_ANSWERS_DIR

log = logging.getLogger(__name__)

BEST_DIR = "best"  # the best adapter so far, while the run goes on


def adapter_view(session: Session) -> LoadedAdapter:
    """The adapter being trained, as ``lorakit infer/eval`` sees a finished one: same wrapping, same generation."""
    from lorakit.data.dataset import build_encoder

    encoder, _ = build_encoder(session.cfg.data, session.tokenizer)
    shape = session.datasets.prompt_shape or PromptShape(chat=bool(encoder.template))
    return LoadedAdapter(session.run_dir.name, session.run_dir, session.model, session.tokenizer, encoder, shape,
                         session.cfg.data.max_length, session.accelerator.device, None)


class _EvalMode:
    """The adapter in eval mode (no dropout) for generating; back to training mode after."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __enter__(self) -> None:
        self.was_training = self.model.training
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)


@dataclass
class TrainingEvaluator:
    """``train.eval_metrics`` after a step: eval_loss on every process, the generated ones on the main process."""

    session: Session
    cases: list[EvalCase]
    adapter: LoadedAdapter
    earlier: list[str] | None = None  # the last evaluation's answers

    @classmethod
    def of(cls, session: Session) -> TrainingEvaluator | None:
        if not session.datasets.eval:
            return None
        limit = session.cfg.train.eval_generate_rows
        cases = cases_from_conversations(session.datasets.eval_conversations)[:limit]
        return cls(session, cases, adapter_view(session))

    def __call__(self, step: int) -> dict[str, Any]:
        key = self._baseline_key() if step == 0 else None
        if key is not None and (known := baseline_memo.recall(key)) is not None:
            metrics, answers = known
            log.info("step 0: the untrained adapter adds nothing to the base model, whose evaluation on these "
                     "cases an earlier run computed (%s)", baseline_memo.memo_folder())
        else:
            metrics, answers = self._evaluate()
            if key is not None:
                baseline_memo.remember(key, metrics, answers)
        if answers is not None:
            self._keep_answers(step, answers)
            self.earlier = answers
        return metrics

    def _baseline_key(self) -> str | None:
        """The step-0 evaluation's memo key, where it can be remembered: one process, supervised training (a
        DPO run's step 0 compares with its reference), an adapter that adds nothing yet."""
        s, train = self.session, self.session.cfg.train
        if s.accelerator.num_processes != 1 or train.method != "sft" or not baseline_memo.adds_nothing(s.model):
            return None
        prompts = [self.adapter.encoder.prompt_ids(case_turns(self.adapter, c), c.tools) for c in self.cases]
        settings = {"metrics": list(train.eval_metrics), "max_new_tokens": s.cfg.data.max_length,
                    "lanes": GENERATE_LANES, "micro_batch_size": train.micro_batch_size, "grouped_by_tokens": True,
                    "loss_chunk_tokens": train.loss_chunk_tokens, "cap_at_reference": True,
                    "compile": train.compile, "quantization": s.cfg.model.quantization,
                    "attention": getattr(s.model.get_base_model().config, "_attn_implementation", None)}
        return baseline_memo.baseline_key(s, prompts, [c.reference for c in self.cases], settings)

    def _evaluate(self) -> tuple[dict[str, Any], list[str] | None]:
        """The metrics, and the generated answers they were computed from (None without generated metrics)."""
        from lorakit.train.evaluate import evaluate_loss

        s, train = self.session, self.session.cfg.train
        metrics: dict[str, Any] = {}
        generated = [m for m in train.eval_metrics if m in GENERATED_METRICS]
        starts = None
        if "loss" in train.eval_metrics and generated and train.method != "dpo" and s.accelerator.num_processes == 1:
            from lorakit.infer.drafts import loss_and_greedy_starts

            # one pass gives the loss and, from the same logits, the answers' starts greedy decoding would
            # write: the generation below decodes only past them
            with s.accelerator.autocast(), _EvalMode(s.model):
                metrics["eval_loss"], starts = loss_and_greedy_starts(
                    s.model, self._groups(), s.tokenizer.pad_token_id, train.loss_chunk_tokens,
                    s.accelerator.device, keep_states=len(self.cases))
        elif "loss" in train.eval_metrics and train.method == "dpo":
            from lorakit.train.preference import evaluate_pairs

            with s.accelerator.autocast():  # the preference loss, accuracy and margins of the held-out pairs
                metrics.update(evaluate_pairs(s.trainable, s.datasets.eval, train.micro_batch_size,  # type: ignore[arg-type]
                                              s.tokenizer.pad_token_id, train.loss_chunk_tokens, s.accelerator.device,
                                              s.accelerator))
        elif "loss" in train.eval_metrics:
            with s.accelerator.autocast():
                metrics["eval_loss"] = evaluate_loss(s.trainable, self._groups(), s.tokenizer.pad_token_id,
                                                     train.loss_chunk_tokens, s.accelerator.device, s.accelerator)
        if generated and s.accelerator.is_main_process:
            with _EvalMode(s.model):
                # the last evaluation's answers as drafts: from one evaluation to the next most answers change little
                results, answers = score(self.adapter, self.cases, generated, max_new_tokens=s.cfg.data.max_length,
                                         batch_size=GENERATE_LANES, cap_at_reference=True, starts=starts,
                                         earlier=self.earlier)
            metrics.update({f"eval_{name}": results[name] for name in generated})
            return metrics, answers
        return metrics, None

    def _groups(self) -> list[list[Any]]:
        """The validation examples, as many to a forward as a training micro-batch's tokens allow."""
        from lorakit.data.packing import evaluation_groups

        s = self.session
        return evaluation_groups(s.datasets.eval, s.cfg.train.micro_batch_size, s.cfg.data.max_length)

    def _keep_answers(self, step: int, answers: list[str]) -> None:
        """The answers the metrics were computed from, for people (the dashboard shows them by step):
        val_answers/step-000090.jsonl, one {"prompt", "reference", "output"} per validation row scored."""
        rows = [{"prompt": c.prompt if isinstance(c.prompt, str) else c.prompt[-1].content, "reference": c.reference,
                 "output": a} for c, a in zip(self.cases, answers, strict=True)]
        folder = self.session.run_dir / VAL_ANSWERS_DIR
        folder.mkdir(exist_ok=True)
        (folder / f"step-{step:06d}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                                      encoding="utf-8")


def load_sample_prompts(path: Path) -> list[list[Turn] | str]:
    """A .txt file: one prompt a line (wrapped as the run's prompts were); else rows in any training format,
    whose prompt is everything before the last trained turn."""
    from lorakit.data.dataset import load_conversations
    from lorakit.textfile import read_lines

    if path.suffix.lower() == ".txt":
        from lorakit.errors import DataError

        return [line.strip() for _, line in read_lines(path, DataError) if line.strip()]
    return [case.prompt for case in cases_from_conversations(load_conversations([path]))]


@dataclass
class Sampler:
    """Greedy answers to the sample prompts: samples/step-000090.jsonl, and the callbacks (TensorBoard text)."""

    session: Session
    prompts: list[list[Turn] | str]
    adapter: LoadedAdapter

    @classmethod
    def of(cls, session: Session) -> Sampler | None:
        path = session.cfg.train.sample_prompts
        if path is None or not session.accelerator.is_main_process:
            return None
        sampler = cls(session, load_sample_prompts(Path(path)), adapter_view(session))
        # before the first step, not at the first sample hours later: the file's prompts are not cut to max_length
        check_context(sampler.adapter, [sampler.adapter.encoder.prompt_ids(t) for t in sampler.turns()],
                      f"{path}: prompt", "shorten it")
        return sampler

    def turns(self) -> list[list[Turn]]:
        return [self.adapter.shape.turns(p) if isinstance(p, str) else p for p in self.prompts]

    def __call__(self, step: int) -> None:
        from lorakit.infer.generate import generate_turns

        turns = self.turns()
        with _EvalMode(self.session.model):
            answers = generate_turns(self.adapter, turns, max_new_tokens=self.session.cfg.data.max_length)
        rows = [{"prompt": p if isinstance(p, str) else p[-1].content, "output": a}
                for p, a in zip(self.prompts, answers, strict=True)]
        folder = self.session.run_dir / SAMPLES_DIR
        folder.mkdir(exist_ok=True)
        (folder / f"step-{step:06d}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                                      encoding="utf-8")
        for cb in self.session.callbacks:
            if hasattr(cb, "on_samples"):  # a user's own callback may predate samples
                cb.on_samples(step, rows)


@dataclass
class BestAdapter:
    """The best adapter so far: a copy in memory (for the resume state) and on disk in ``best/``."""

    session: Session
    weights: dict[str, Any] | None = None  # parameter name -> tensor on the CPU
    step: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def __call__(self, step: int) -> None:
        from lorakit.train.resume import trainable_state

        if not self.session.accelerator.is_main_process:
            return
        self.weights, self.step = trainable_state(self.session.model), step
        save_shared(self.session.model, self.session.run_dir / BEST_DIR)
        log.info("step %d is the best so far; its adapter is in %s/", step, BEST_DIR)

    def restore(self, weights: dict[str, Any] | None, step: int | None) -> None:
        """From a resume state: the copy in memory, and best/ written again from it."""
        if weights is None or not self.session.accelerator.is_main_process:
            return
        self.weights, self.step = weights, step
        with _Swapped(self.session.model, weights):
            save_shared(self.session.model, self.session.run_dir / BEST_DIR)


class _Swapped:
    """The model holding ``weights`` for a moment (to save them), its own weights back after."""

    def __init__(self, model: Any, weights: dict[str, Any]) -> None:
        self.model, self.weights = model, weights

    def __enter__(self) -> None:
        from lorakit.train.resume import trainable_state

        self.own = trainable_state(self.model)
        _load(self.model, self.weights)

    def __exit__(self, *exc: object) -> None:
        _load(self.model, self.own)


def _load(model: Any, weights: dict[str, Any]) -> None:
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)


def swapped(model: Any, weights: dict[str, Any]) -> _Swapped:
    return _Swapped(model, weights)
