"""Greedy decoding of many prompts at once in llama.cpp: one decode step advances every unfinished sequence.

On a CPU a step of a small model is bound by reading its weights (the 262k x 640 output matrix of Gemma-3
270M alone is 335 MB in f16), so advancing 16 sequences per read instead of one is where the speed is.
llama-cpp-python's ``Llama`` decodes one sequence; this uses its lower-level batch API on a second context
that shares the loaded model (and its LoRA adapter).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


class BatchDecoder:
    """A llama.cpp context for ``lanes`` sequences of up to ``lane_tokens`` tokens each."""

    def __init__(self, llm: Any, lanes: int, lane_tokens: int) -> None:
        import llama_cpp
        from llama_cpp import _internals
        from llama_cpp._utils import suppress_stdout_stderr

        self.llama_cpp = llama_cpp
        self.lanes, self.lane_tokens = lanes, lane_tokens
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = lanes * lane_tokens
        params.n_batch = params.n_ubatch = max(512, lane_tokens)
        params.n_seq_max = lanes
        # One cache shared by all lanes: llama.cpp then decodes a batch that mixes a new prompt with the other
        # lanes' single tokens in one pass (per-lane caches split it into as many passes as the prompt is long).
        params.kv_unified = True
        params.n_threads = params.n_threads_batch = llm.context_params.n_threads
        params.no_perf = True
        with suppress_stdout_stderr(disable=False):  # llama.cpp prints its context set-up on stderr
            self.context = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        adapter = getattr(llm, "_lora_adapter", None)
        if adapter is not None:  # the adapter is set per context: apply it to this one too
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter)
            scales = (ctypes.c_float * 1)(llm.lora_scale)
            if llama_cpp.llama_set_adapters_lora(self.context.ctx, adapters, 1, scales):
                raise RuntimeError("llama.cpp could not apply the LoRA adapter to the batch context")
        self.batch = _internals.LlamaBatch(n_tokens=params.n_batch, embd=0, n_seq_max=lanes, verbose=False)
        self.n_vocab = llm.n_vocab()

    def _decode(self, entries: Sequence[tuple[int, int, int, bool]]) -> None:
        """Decode (token, position, sequence, wants logits) entries as one batch."""
        raw = self.batch.batch
        raw.n_tokens = len(entries)
        for i, (token, position, sequence, logits) in enumerate(entries):
            raw.token[i], raw.pos[i], raw.logits[i] = token, position, logits
            raw.seq_id[i][0], raw.n_seq_id[i] = sequence, 1
        if self.llama_cpp.llama_decode(self.context.ctx, raw) != 0:
            raise RuntimeError("llama.cpp could not decode a batch (context too small?)")

    def _argmax(self, index: int) -> int:
        logits = np.ctypeslib.as_array(self.llama_cpp.llama_get_logits_ith(self.context.ctx, index),
                                       shape=(self.n_vocab,))
        return int(logits.argmax())

    def _next_batch(self, lanes: dict[int, Lane], free: list[int], queue: list[int],
                    prompts: Sequence[list[int]]) -> list[tuple[int, int, int, bool]]:
        """One batch: the next token of every running lane, then whole prompts started on free lanes while
        they fit (a prompt longer than the batch goes alone, decoded in pieces)."""
        entries = []
        for number, lane in lanes.items():
            lanes[number] = Lane(lane.index, lane.last + 1, lane.next_token)
            entries.append((lane.next_token, lane.last + 1, number, True))
        room = self.context.params.n_batch - len(entries)
        while free and queue and (len(prompts[queue[0]]) <= room or not entries):
            index, number = queue.pop(0), free.pop(0)
            prompt = prompts[index]
            lanes[number] = Lane(index, len(prompt) - 1, -1)
            entries.extend((t, i, number, i == len(prompt) - 1) for i, t in enumerate(prompt))
            room -= len(prompt)
        return entries

    def _run(self, entries: list[tuple[int, int, int, bool]]) -> dict[int, int]:
        """Decode ``entries``; {lane: the index its logits are read at}."""
        size = self.context.params.n_batch
        for start in range(0, len(entries), size):
            self._decode(entries[start:start + size])
        if len(entries) > size:  # one long prompt alone: its last token's logits are the last output
            return {entries[-1][2]: -1}
        return {entry[2]: i for i, entry in enumerate(entries) if entry[3]}

    def greedy(self, prompts: Sequence[list[int]], budgets: Sequence[int], stops: set[int],
               on_done: Callable[[int], None] | None = None) -> list[list[int]]:
        """New tokens for every prompt, each ending before a stop token or at its budget. A lane whose
        sequence ends takes the next prompt at once (continuous batching), so no lane idles while the
        longest answer of a group finishes."""
        memory = self.llama_cpp.llama_get_memory(self.context.ctx)
        self.llama_cpp.llama_memory_clear(memory, True)
        outputs: list[list[int]] = [[] for _ in prompts]
        lanes: dict[int, Lane] = {}
        # Longest first: the last lanes to finish are then the short ones.
        queue = sorted(range(len(prompts)), key=lambda i: -(len(prompts[i]) + budgets[i]))
        free, finished = list(range(self.lanes)), 0
        while lanes or queue:
            read_at = self._run(self._next_batch(lanes, free, queue, prompts))
            for number, lane in list(lanes.items()):
                token, out = self._argmax(read_at[number]), outputs[lane.index]
                if token not in stops and len(out) < budgets[lane.index]:
                    out.append(token)
                    lanes[number] = Lane(lane.index, lane.last, token)
                    continue
                del lanes[number]
                self.llama_cpp.llama_memory_seq_rm(memory, number, -1, -1)
                free.append(number)
                finished += 1
                if on_done is not None and (finished % 16 == 0 or finished == len(prompts)):
                    on_done(finished)
        return outputs


@dataclass(frozen=True)
class Lane:
    index: int  # which prompt
    last: int  # the position of the last token fed
    next_token: int  # chosen, not yet fed


def greedy_all(llm: Any, prompts: Sequence[list[int]], budgets: Sequence[int], stops: set[int], lanes: int,
               on_done: Callable[[int], None] | None = None) -> list[list[int]]:
    """Every prompt decoded greedily, up to ``lanes`` at a time."""
    longest = max(len(p) + b for p, b in zip(prompts, budgets, strict=True)) + 1
    lane_tokens = -(-longest // 256) * 256  # llama.cpp pads the context to 256 cells before sharing it out
    decoder = BatchDecoder(llm, min(lanes, len(prompts)), lane_tokens)
    return decoder.greedy(prompts, budgets, stops, on_done)
