"""Generate: prompts wrapped as in training, batched with left padding, greedy unless a temperature is given."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lorakit.data.formats import Turn
from lorakit.errors import DataError, ModelError
from lorakit.infer.lanes import Request
from lorakit.infer.load import LoadedAdapter

if TYPE_CHECKING:
    from lorakit.infer.answer_log import AnswerLog
    from lorakit.infer.drafts import GreedyStarts

log = logging.getLogger(__name__)

# Answers decoded at once by default. Gemma-3 270M on 2 CPU cores: the 660 dev formulas in 128 s with 32
# lanes, 104 s with 64, 93 s with 96 or 128 (docs/benchmarks.md). The decoder takes fewer when their keys and
# values would pass lane_cache.CACHE_BYTES (TinyLlama at a 4k-token context: 23 lanes).
GENERATE_LANES = 96


@contextmanager
def merged(adapter: LoadedAdapter) -> Iterator[None]:
    """The LoRA weights added into the base weights while generating (one matmul per layer instead of three),
    taken out again after. Only for an adapter loaded for inference (a training run's base may be quantised,
    where merging is lossy), in float32."""
    import torch

    # float32 only: merging and unmerging in bfloat16 would leave the base weights rounded for ``--base``.
    mergeable = (adapter.base is not None and hasattr(adapter.model, "merge_adapter")
                 and adapter.model.get_base_model().dtype == torch.float32)
    if mergeable:
        adapter.model.merge_adapter()
    try:
        yield
    finally:
        if mergeable:
            adapter.model.unmerge_adapter()


def generate(adapter: LoadedAdapter, inputs: Sequence[str], **options: Any) -> list[str]:
    """The model's answer to each input text, wrapped the way the run's training prompts were."""
    return generate_turns(adapter, [adapter.shape.turns(text) for text in inputs], **options)


def generate_turns(adapter: LoadedAdapter, conversations: Sequence[Sequence[Turn]], max_new_tokens: int = 256,
                   temperature: float = 0.0, batch_size: int = GENERATE_LANES, use_adapter: bool = True, seed: int = 0,
                   on_batch: Callable[[int], None] | None = None, length_ratio: float | None = None,
                   tools: Sequence[list[dict[str, Any]] | None] | None = None, stop: Sequence[str] = (),
                   padded: bool = False, caps: Sequence[int] | None = None,
                   starts: GreedyStarts | None = None, earlier: Sequence[str] | None = None,
                   kept: AnswerLog | None = None) -> list[str]:
    """The model's next assistant turn for each conversation, in order.

    Args:
        batch_size: sequences decoded at once (lanes of the continuous-batching decoder).
        use_adapter: False runs the base model alone on the same prompts (``eval --base``).
        on_batch: called with the number of conversations finished so far (progress).
        length_ratio: for conversions, whose answer is about as long as the question: an answer stops
            after this many times its prompt's length (+16) new tokens, so one answer that never ends does
            not run for ``max_new_tokens`` steps.
        tools: each conversation's tool definitions (None: none), rendered with its prompt.
        stop: texts that end an answer (left out of it), beside the model's end-of-turn tokens.
        padded: transformers' ``generate`` on fixed batches, as before the lane decoder (benchmarks).
        caps: each conversation's own most new tokens, beside ``max_new_tokens`` and ``length_ratio``.
        starts: greedy answers' starts proven by a teacher-forced pass of the same model (``infer.drafts``):
            greedy only, decoded from where they end.
        earlier: each conversation's answer from an earlier evaluation of a nearby adapter (a training run's
            previous one): greedy decoding drafts from it, and keeps a drafted token only where it is the pick.
        kept: answers found before by a run that stopped (not decoded again), and where each new one is kept
            as soon as it ends.
    """
    tools = tools or [None] * len(conversations)
    prompts = [adapter.encoder.prompt_ids(turns, row_tools) for turns, row_tools in zip(conversations, tools,
                                                                                          strict=True)]
    check_context(adapter, prompts)
    budgets = [min(max_new_tokens, int(length_ratio * len(p)) + 16) if length_ratio else max_new_tokens
               for p in prompts]
    if caps is not None:
        budgets = [min(budget, cap) for budget, cap in zip(budgets, caps, strict=True)]
    answers = kept.recall(prompts, budgets) if kept is not None else {}
    todo = [i for i in range(len(prompts)) if i not in answers]
    recalled = len(answers)

    def text(ids: list[int]) -> str:
        return cut_at_stop(adapter.tokenizer.decode(ids, skip_special_tokens=True), stop).strip()

    def on_answer(k: int, ids: list[int]) -> None:  # the k-th answer to decode has ended: kept at once
        if kept is not None:
            kept.add(prompts[todo[k]], budgets[todo[k]], text(ids))

    progress = None if on_batch is None else (lambda done: on_batch(recalled + done))
    todo_prompts, todo_budgets = [prompts[i] for i in todo], [budgets[i] for i in todo]
    if hasattr(adapter.model, "generate_all"):  # the llama.cpp engine: one prompt at a time, its own budget
        if not use_adapter:
            raise ModelError("--base compares with the base model under --engine transformers only")
        new_ids = adapter.model.generate_all(todo_prompts, adapter.stop_ids, todo_budgets, temperature, seed,
                                             progress, batch_size) if todo else []
        for k, ids in enumerate(new_ids):
            on_answer(k, ids)
    else:
        requests = [Request(p, b) for p, b in zip(todo_prompts, todo_budgets, strict=True)]
        if temperature <= 0:  # proven starts and drafts are greedy's
            guide_requests(requests, starts, [adapter.tokenizer.encode(earlier[i], add_special_tokens=False)
                                              for i in todo] if earlier else None)
        new_ids = _generate_torch(adapter, requests, GenerateOptions(
            temperature, batch_size, use_adapter, seed, progress, length_ratio, max_new_tokens, stop, padded,
            on_answer))
    answers.update((todo[k], text(ids)) for k, ids in enumerate(new_ids))
    return [answers[i] for i in range(len(prompts))]


def check_context(adapter: LoadedAdapter, prompts: Sequence[Sequence[int]], what: str = "input",
                  advice: str = "split it or give shorter inputs (infer: --unit line, or a table of rows)") -> None:
    """Every prompt fits the model's context (``max_position_embeddings``), before any is run: a longer one would
    ask for memory by the square of its length (a whole file read as one piece: hundreds of GB).

    Raises:
        DataError: which ``what``, its tokens and the model's context, then ``advice``.
    """
    context = getattr(getattr(causal_lm(adapter.model), "config", None), "max_position_embeddings", None)
    if not isinstance(context, int) or not prompts:
        return  # llama.cpp's engine sizes its own context
    longest = max(range(len(prompts)), key=lambda i: len(prompts[i]))
    if len(prompts[longest]) > context:
        raise DataError(f"{what} {longest + 1} of {len(prompts)} is {len(prompts[longest]):,} tokens with its "
                        f"prompt, longer than the model's context ({context:,} tokens); {advice}")


def guide_requests(requests: list[Request], starts: GreedyStarts | None, earlier: Sequence[list[int]] | None) -> None:
    """Give each greedy request what is known of its answer: the start a loss pass proved (with that pass's keys
    and values), and as drafts its reference past that start and an earlier answer to the same prompt."""
    for number, request in enumerate(requests):
        if starts is not None:
            request.known = starts.after(request.prompt)
            request.hint = starts.reference(request.prompt)
            request.states = starts.states(request.prompt)
        if earlier is not None:
            request.hint = request.hint + list(earlier[number])


@dataclass
class GenerateOptions:
    """``generate_turns``' options, as the transformers engine's two decoders take them."""

    temperature: float
    batch_size: int
    use_adapter: bool
    seed: int
    on_batch: Callable[[int], None] | None
    length_ratio: float | None
    max_new_tokens: int
    stop: Sequence[str]
    padded: bool
    on_answer: Callable[[int, list[int]], None] | None = None  # each request's new tokens, as soon as it ends


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first of the ``stop`` texts in it."""
    ends = [text.find(s) for s in stop if s and s in text]
    return text[: min(ends)] if ends else text


def causal_lm(model: Any) -> Any:
    """The transformers causal LM inside a PEFT, accelerate or compiled wrapper."""
    for wrapper in ("module", "_orig_mod"):
        model = getattr(model, wrapper, model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _generate_torch(adapter: LoadedAdapter, requests: list[Request], options: GenerateOptions) -> list[list[int]]:
    import torch

    from lorakit.infer.lanes import LaneDecoder, fits_lanes
    from lorakit.infer.picks import greedy, sampler

    if not requests:
        return []
    stop_ids = adapter.stop_ids
    pad = adapter.tokenizer.pad_token_id if adapter.tokenizer.pad_token_id is not None else stop_ids[0]
    lm = causal_lm(adapter.model)
    context = merged(adapter) if options.use_adapter else adapter.model.disable_adapter()
    with torch.inference_mode(), context:
        if options.padded or not fits_lanes(lm, requests):
            return _generate_padded(adapter, [r.prompt for r in requests], pad, options)
        pick = greedy if options.temperature <= 0 else sampler(options.temperature, options.seed)
        decoder = LaneDecoder(lm, requests, stop_ids, pad, options.batch_size, pick,
                              stop_check(adapter.tokenizer, options.stop))
        return decoder.run(options.on_batch, options.on_answer)


def stop_check(tokenizer: Any, stop: Sequence[str]) -> Callable[[list[int]], bool] | None:
    """Whether an answer's tokens so far hold one of the ``stop`` texts (only its last tokens are decoded:
    enough of them to hold the longest stop text)."""
    stop = [s for s in stop if s]
    if not stop:
        return None
    window = max(len(s) for s in stop) + 8  # a token holds at least one character

    def finished(tokens: list[int]) -> bool:
        tail = tokenizer.decode(tokens[-window:], skip_special_tokens=True)
        return any(s in tail for s in stop)

    return finished


def _generate_padded(adapter: LoadedAdapter, prompts: list[list[int]], pad: int,
                     options: GenerateOptions) -> list[list[int]]:
    """transformers' ``generate`` on batches of similar lengths, left padded: each batch runs until its
    longest answer ends. For models the lane decoder does not know, and as the benchmarks' baseline."""
    import torch

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths batch with little padding
    stop_ids = adapter.stop_ids  # read from the vocabulary: once
    new_ids: list[list[int]] = [[] for _ in prompts]
    torch.manual_seed(options.seed)
    sampling: dict[str, Any] = ({"do_sample": True, "temperature": options.temperature} if options.temperature > 0
                                else {"do_sample": False})
    for start in range(0, len(order), options.batch_size):
        batch = order[start : start + options.batch_size]
        width = max(len(prompts[i]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):  # left padding: every prompt ends where generation starts
            ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]):] = 1
        ratio = options.length_ratio
        budget = min(options.max_new_tokens, int(ratio * width) + 16) if ratio else options.max_new_tokens
        generated = adapter.model.generate(
            input_ids=ids.to(adapter.device), attention_mask=mask.to(adapter.device),
            max_new_tokens=budget, eos_token_id=stop_ids, pad_token_id=pad, **sampling)
        for row, i in enumerate(batch):
            tokens = generated[row, width:].tolist()
            ends = [n for n, t in enumerate(tokens) if t in stop_ids]  # after it: padding
            new_ids[i] = tokens[: ends[0]] if ends else tokens
            if options.on_answer is not None:
                options.on_answer(i, new_ids[i])
        if options.on_batch is not None:
            options.on_batch(min(start + options.batch_size, len(order)))
    return new_ids
