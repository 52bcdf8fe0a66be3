"""Continuous batching: many answers decoded at once, a finished lane taking the next prompt at the next step.

transformers' ``generate`` keeps every row of a batch running until the longest one ends, and a decode step of
a small model with a large vocabulary (Gemma-3 270M: a 262,144-row output matrix) costs about the same for one
row as for thirty, so idle rows are lost time. Here each lane has its own slot in preallocated key/value buffers
and its own write column; a lane that ends (a stop token, its length budget, a stop string) is refilled from the
queue at once: its prompt is prefilled alone (with the other newcomers of that step) into the lane's slot, and
the next decode step runs every busy lane together. Prompts are taken longest first, so the long answers start
early and the last steps are not one long answer running alone.

Two things let a lane take more than one token a step, greedy only: tokens already known to start its answer
(``Request.known``, from a loss pass that checked the reference: ``drafts``) are prefilled with its prompt, or
not run at all where that pass kept their keys and values (``Request.states``), and
in the tail, when few lanes are left, a lane runs tokens drafted from its own text and its reference, when an
evaluation gives one (``lookup``, ``Request.hint``), after its last one and keeps them for as long as each is the
pick after the one before.

Greedy answers equal ``generate``'s token for token up to float rounding: the same positions (counted from each
prompt's first token), the same causal mask, the padding columns masked out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lorakit.infer.lane_cache import LaneCache, cache_budget, kv_bytes_per_token
from lorakit.infer.lookup import lookup_draft
from lorakit.infer.picks import greedy
from lorakit.model.head import head_logits

# Newcomers prefilled in one forward pass at most: more rows pad more (lengths differ) for little gain.
ADMIT_GROUP = 16
# Greedy decode steps check drafted tokens (``lookup``) while the step's tokens, padded to the longest draft,
# stay under this many rows: a step reads every weight once (Gemma-3 270M: about 66 ms on 2 cores) and each row
# adds about 1.5 ms, so with few lanes (one prompt, an evaluation's last and longest answers) a drafted token
# costs little and each one kept saves a step.
DRAFT_ROWS = 64
DRAFT_MOST = 8  # tokens drafted after a lane's last one at most
DRAFT_REST = 4  # steps a lane whose draft went wrong at its first token decodes without drafting


@dataclass
class Request:
    prompt: list[int]
    budget: int  # new tokens at most
    # tokens known to start the greedy answer (``infer.drafts``): prefilled with the prompt, never decoded
    known: list[int] = field(default_factory=list)
    # tokens the answer may repeat past its known start (its reference): drafts are looked up in them too
    hint: list[int] = field(default_factory=list)
    # every layer's (keys, values) [kv heads, tokens, head dim] of ``start`` but its last token, computed by
    # the loss pass: the lane is filled with them instead of a prefill, and decodes on from that last token
    states: list[tuple[Any, Any]] | None = None

    @property
    def start(self) -> list[int]:
        """What the lane is prefilled with: the prompt and the known start of its answer."""
        return self.prompt + self.known


@dataclass
class Lane:
    request: int  # index into the requests
    tokens: list[int] = field(default_factory=list)
    # tokens its next draft may have: doubled after a draft kept whole, cut to what was kept otherwise (a
    # drafted token costs a row of the step whether kept or not); at 0 the lane rests, then tries 1 again
    allowed: int = 2
    resting: int = 0

    def learn(self, drafted: int, kept: int) -> None:
        """After a step: ``kept`` of the ``drafted`` tokens were greedy's picks."""
        if not drafted:
            self.resting = max(0, self.resting - 1)
            if not self.allowed and not self.resting:
                self.allowed = 1
            return
        self.allowed = min(DRAFT_MOST, 2 * drafted) if kept == drafted else kept
        self.resting = 0 if self.allowed else DRAFT_REST


# Config keys of models whose causal-LM head does more than the output matrix and Gemma's soft-capping.
UNKNOWN_HEADS = ("logit_scale", "logits_scaling", "output_multiplier_scale")
# Attention implementations that take the decoder's boolean [rows, 1, queries, keys] masks as they are
# (flash-attention reads padding from a 2D mask, eager adds the mask as numbers): lorakit's segmented
# attention hands calls without segments to SDPA.
MASKED_ATTENTION = ("sdpa", "lorakit_segments")


def fits_lanes(model: Any, requests: Sequence[Request]) -> bool:
    """Whether the lane decoder gives ``generate``'s answers for these requests on this model: a head it
    knows, and every prompt and answer inside the model's sliding window (beyond it a sliding layer would
    attend to fewer tokens than here)."""
    config = model.config
    window = getattr(config, "sliding_window", None)
    longest = max((len(r.prompt) + r.budget for r in requests), default=0)
    return (not any(getattr(config, key, None) for key in UNKNOWN_HEADS)
            and getattr(config, "_attn_implementation", None) in MASKED_ATTENTION
            and hasattr(model, "base_model_prefix") and (window is None or longest <= window))


class LaneDecoder:
    """Decode ``requests`` on ``model`` (a transformers causal LM taking ``cache=``) with up to ``lanes`` at once.

    ``pick`` turns a step's logits [rows, vocab] into next tokens (argmax for greedy); ``finished`` says
    whether a lane's tokens so far end its answer early (stop strings), beside the stop ids and the budget.

    The model's body and its output head run apart: the head (for Gemma-3 most of a decode step's work, and
    as slow for 10 rows as for 40, reading a 671 MB matrix) runs once a step, for the busy lanes and the
    newcomers prefilled since the last step together.
    """

    def __init__(self, model: Any, requests: Sequence[Request], stop_ids: Sequence[int], pad_id: int,
                 lanes: int, pick: Callable[[Any], Any], finished: Callable[[list[int]], bool] | None = None) -> None:
        import torch

        self.body = getattr(model, model.base_model_prefix)
        self.output = model.get_output_embeddings()
        self.softcap = getattr(model.config, "final_logit_softcapping", None)
        self.requests, self.pick, self.finished = requests, pick, finished
        self.stop_ids, self.pad_id = set(stop_ids), pad_id
        self.device = next(model.parameters()).device
        self.dtype = model.dtype
        self.answers: list[list[int]] = [[] for _ in requests]
        # a request with no budget has the empty answer, one whose known tokens end it has those: neither
        # takes a lane
        settled = {i: known_answer(r, self.stop_ids, finished) for i, r in enumerate(requests)}
        for i, answer in settled.items():
            self.answers[i] = answer or []
        self.queue = sorted((i for i, answer in settled.items() if answer is None),
                            key=lambda i: -len(requests[i].start))
        decoded = [requests[i] for i in self.queue] or list(requests)
        # a prompt ends at its group's widest prompt's column (left padding), then its answer follows
        columns = (max(len(r.start) for r in decoded) + max(r.budget - len(r.known) for r in decoded) + 1
                   + DRAFT_MOST)  # a lane near its budget still writes its step's drafted columns
        per_lane = kv_bytes_per_token(model.config, model.dtype.itemsize) * columns
        self.lanes = max(1, min(lanes, len(decoded), cache_budget(self.device) // per_lane))
        self.cache = LaneCache(self.lanes, columns)
        self.filled = torch.zeros((self.lanes, columns), dtype=torch.bool, device=self.device)  # written columns
        self.column = torch.zeros(self.lanes, dtype=torch.long, device=self.device)  # each lane's next column
        self.position = torch.zeros(self.lanes, dtype=torch.long, device=self.device)  # its next token's position
        self.last = torch.full((self.lanes,), pad_id, dtype=torch.long, device=self.device)  # its last token
        self.busy: dict[int, Lane] = {}
        self.waiting: list[int] = []  # lanes prefilled, their first token not picked yet
        self.waiting_hidden: list[Any] = []  # their prompts' last hidden states
        self.prefix = 0
        self.drafting = pick is greedy  # a drafted token is kept when it is the pick: greedy's rule only
        self.on_answer: Callable[[int, list[int]], None] | None = None

    def run(self, on_done: Callable[[int], None] | None = None,
            on_answer: Callable[[int, list[int]], None] | None = None) -> list[list[int]]:
        """Every request's new tokens (the stop token left out), in the requests' order; ``on_answer`` is given
        each decoded one (its request's index, its tokens) as soon as it ends."""
        self.on_answer = on_answer
        if not self.queue:
            return self.answers
        self._prefix()
        done, reported = len(self.requests) - len(self.queue), 0  # the settled ones count as done
        while self.queue or self.busy:
            free = [slot for slot in range(self.lanes) if slot not in self.busy]
            # newcomers wait until an eighth of the lanes is free: a prefill of eight prompts costs little more
            # than one of a single prompt, and an idle lane costs one row of the body's work, not the head's
            if self.queue and (len(free) >= max(1, self.lanes // 8) or len(free) >= len(self.queue)
                               or not self.busy):
                self._admit(free[: len(self.queue)])
            done += self._step()
            if on_done is not None and (done - reported >= self.lanes or done == len(self.requests) > reported):
                on_done(done)  # about once per lanes' worth of answers
                reported = done
        return self.answers

    def _prefix(self) -> None:
        """Run the prompts' common start once; every prefill copies its keys and values (positions 0.. are
        the same in every lane). At least one token of each prompt is left for its prefill, whose last
        hidden state gives the first answer token."""
        import torch

        prompts = [self.requests[i].start for i in self.queue if self.requests[i].states is None]
        if not prompts:
            return
        shared = prompts[0][: min(len(p) for p in prompts) - 1]
        for prompt in prompts:
            while prompt[: len(shared)] != shared:
                shared = shared[:-1]
        if shared:
            ids = torch.tensor([shared], dtype=torch.long, device=self.device)
            causal = torch.ones((1, 1, len(shared), len(shared)), dtype=torch.bool, device=self.device).tril()
            self.body(input_ids=ids, position_ids=torch.arange(len(shared), device=self.device)[None],
                      attention_mask=causal, cache=self.cache, use_cache=True)
        self.prefix = len(shared)

    def _admit(self, slots: list[int]) -> None:
        """Fill ``slots`` with the next requests: from their kept keys and values where they have them, else by
        prefilling their prompts sixteen at a time (the queue is sorted by length, so a group pads little)."""
        prefills = []
        for slot in slots:
            request = self.queue.pop(0)
            if self.requests[request].states is not None:
                self._restore(slot, request)
            else:
                prefills.append((slot, request))
        for start in range(0, len(prefills), ADMIT_GROUP):
            group = prefills[start : start + ADMIT_GROUP]
            self._prefill([slot for slot, _ in group], [request for _, request in group])

    def _restore(self, slot: int, request: int) -> None:
        """Fill ``slot`` with the keys and values the loss pass computed for the request's start but its last
        token; that token runs in the next decode step, as any decoding lane's last token does."""
        start = self.requests[request].start
        written = len(start) - 1
        self.cache.restore(slot, self.requests[request].states, self.dtype)
        self.filled[slot] = False
        self.filled[slot, :written] = True
        self.column[slot] = self.position[slot] = written
        self.last[slot] = start[-1]
        self.busy[slot] = Lane(request, list(self.requests[request].known))

    def _prefill(self, slots: list[int], taken: list[int]) -> None:
        """In each slot: the shared prefix, a gap (masked), the rest of the prompt, ending at the same column
        for every newcomer of the group."""
        import torch

        rests = [self.requests[i].start[self.prefix :] for i in taken]
        width = max(len(r) for r in rests)
        ids = torch.full((len(slots), width), self.pad_id, dtype=torch.long, device=self.device)
        real = torch.zeros((len(slots), self.prefix + width), dtype=torch.bool, device=self.device)
        real[:, : self.prefix] = True
        for row, rest in enumerate(rests):
            ids[row, width - len(rest):] = torch.tensor(rest, device=self.device)
            real[row, self.prefix + width - len(rest):] = True
        positions = (real.long().cumsum(-1) - 1)[:, self.prefix :].clamp(min=0)
        causal = torch.ones((width, self.prefix + width), dtype=torch.bool, device=self.device).tril(self.prefix)
        rows = torch.tensor(slots, device=self.device)
        self.cache.prefill(rows)
        hidden = self.body(input_ids=ids, attention_mask=causal[None, None] & real[:, None, None, :],
                           position_ids=positions, cache=self.cache, use_cache=True).last_hidden_state
        self.filled[rows] = False
        self.filled[rows, : self.prefix + width] = real
        self.column[rows] = self.prefix + width
        self.position[rows] = torch.tensor([len(self.requests[i].start) for i in taken], device=self.device)
        for slot, request in zip(slots, taken, strict=True):
            self.busy[slot] = Lane(request, list(self.requests[request].known))
        self.waiting += slots
        self.waiting_hidden.append(hidden[:, -1])

    def _step(self) -> int:
        """The next tokens of every busy lane: the decoding ones run their last token (and the tokens drafted
        after it) through the body, the waiting ones bring their prompt's last hidden state; one head for all.
        Returns how many answers ended."""
        import torch

        decoding = sorted(set(self.busy) - set(self.waiting))
        drafts = self._drafts(decoding)
        hidden = list(self.waiting_hidden)
        if decoding:
            hidden.insert(0, self._decode(decoding, drafts))
        picks = self.pick(self._logits(torch.cat(hidden))).tolist()
        # each lane's picks: after its last token, then after each of its drafted tokens
        kept, start = {}, 0
        for slot, draft in zip(decoding + self.waiting, drafts + [[]] * len(self.waiting), strict=True):
            kept[slot] = _kept(draft, picks[start : start + len(draft) + 1])
            start += len(draft) + 1
        for slot, draft in zip(decoding, drafts, strict=True):
            self.busy[slot].learn(len(draft), len(kept[slot]) - 1)
        if decoding:
            self._advance(decoding, [len(kept[slot]) for slot in decoding])
        self.waiting, self.waiting_hidden = [], []
        return self._emit(kept)

    def _drafts(self, decoding: list[int]) -> list[list[int]]:
        """Each decoding lane's draft (``lookup``) while the step's rows, padded to the longest draft, stay under
        ``DRAFT_ROWS`` (every lane runs while half of them decode: ``_decode``); never past a lane's budget."""
        rows = self.lanes if self._runs_all(decoding) else len(decoding)
        room = DRAFT_ROWS // max(1, rows) - 1
        if not self.drafting or room <= 0:
            return [[] for _ in decoding]
        drafts = []
        for slot in decoding:
            lane = self.busy[slot]
            request = self.requests[lane.request]
            most = min(room, lane.allowed, request.budget - len(lane.tokens) - 1)
            drafts.append(lookup_draft(request.prompt + request.hint + lane.tokens, most))
        return drafts

    def _decode(self, decoding: list[int], drafts: list[list[int]]) -> Any:
        """Each decoding lane's last token and its draft through the body (written at the lane's next columns);
        the hidden states of those tokens, lane after lane.

        While at least half the lanes decode, every lane runs (the others on throw-away tokens written at
        their next columns, which their next real tokens overwrite): the cache is then read in place, where a
        subset would copy every layer's keys and values at every step."""
        import torch

        rows = torch.tensor(decoding, device=self.device)
        width = len(max(drafts, key=len)) + 1
        run_all = self._runs_all(decoding)
        run = torch.arange(self.lanes, device=self.device) if run_all else rows
        inputs = torch.full((run.numel(), width), self.pad_id, dtype=torch.long, device=self.device)
        inputs[:, 0] = self.last[run]
        for row, draft in zip(decoding if run_all else range(len(decoding)), drafts, strict=True):
            inputs[row, 1 : 1 + len(draft)] = torch.tensor(draft, device=self.device)
        steps = torch.arange(width, device=self.device)
        write_at = self.column[run][:, None] + steps  # [run, width]
        read_to = int(write_at.max()) + 1
        columns = torch.arange(read_to, device=self.device)
        # each token sees the lane's written columns, and its own and the step's earlier ones
        this_step = (columns >= write_at[:, :1, None]) & (columns <= write_at[:, :, None])
        mask = self.filled[run, :read_to][:, None, :] | this_step
        self.cache.decode(run, write_at, read_to)
        positions = self.position[run][:, None] + steps
        out = self.body(input_ids=inputs, attention_mask=mask[:, None], position_ids=positions, cache=self.cache,
                        use_cache=True).last_hidden_state
        lengths = torch.tensor([len(d) for d in drafts], device=self.device)
        real = steps[None] <= lengths[:, None]  # a lane's last token and its own draft, not the padding
        return (out[rows] if run_all else out)[real]

    def _runs_all(self, decoding: list[int]) -> bool:
        """Whether a decode step runs every lane (``_decode``)."""
        return 2 * len(decoding) >= self.lanes

    def _advance(self, decoding: list[int], kept: list[int]) -> None:
        """After a step: the columns of each lane's last token and of its drafted tokens that were kept hold
        its cache now; the rest of the step's columns are free again."""
        import torch

        rows = torch.tensor(decoding, device=self.device)
        counts = torch.tensor(kept, device=self.device)  # tokens kept: the drafted ones matched, and one more
        offsets = torch.arange(max(kept), device=self.device)
        written = self.column[rows][:, None] + offsets
        valid = offsets[None] < counts[:, None]
        self.filled[rows[:, None].expand_as(written)[valid], written[valid]] = True
        self.column[rows] += counts
        self.position[rows] += counts

    def _logits(self, hidden: Any) -> Any:
        """The causal LM's head: the output matrix (a plain linear one in the product's fastest layout,
        ``model.head``), and Gemma's soft-capping where the config has it."""
        import torch

        if type(self.output) is torch.nn.Linear:
            logits = head_logits(hidden, self.output.weight)  # padded rows after the hidden ones, on the CPU
            if self.output.bias is not None:
                logits += self.output.bias
        else:
            logits = self.output(hidden.contiguous())
        if self.softcap is not None:  # in place, every row: the logits are this step's own
            logits.div_(self.softcap).tanh_().mul_(self.softcap)
        return logits[: hidden.shape[0]]

    def _emit(self, kept: dict[int, list[int]]) -> int:
        """Append each lane's new tokens (up to where its answer ends); free the lanes whose answer ended.
        Returns how many ended."""
        import torch

        slots = list(kept)
        self.last[torch.tensor(slots, device=self.device)] = torch.tensor([kept[s][-1] for s in slots],
                                                                           device=self.device)
        ended = 0
        for slot, tokens in kept.items():
            lane = self.busy[slot]
            for token in tokens:
                if token not in self.stop_ids:
                    lane.tokens.append(token)
                if token in self.stop_ids or self._complete(lane):
                    self.answers[lane.request] = lane.tokens
                    if self.on_answer is not None:
                        self.on_answer(lane.request, lane.tokens)
                    del self.busy[slot]
                    ended += 1
                    break
        return ended

    def _complete(self, lane: Lane) -> bool:
        """Its length budget reached, or a stop text in its answer."""
        return (len(lane.tokens) >= self.requests[lane.request].budget
                or (self.finished is not None and self.finished(lane.tokens)))


def _kept(draft: list[int], picked: list[int]) -> list[int]:
    """The tokens a step gives a lane: greedy's picks for as long as each drafted token was the pick before it,
    and the pick after the last matching one (the pick where the draft went wrong)."""
    matched = 0
    while matched < len(draft) and picked[matched] == draft[matched]:
        matched += 1
    return picked[: matched + 1]


def known_answer(request: Request, stop_ids: set[int],
                 finished: Callable[[list[int]], bool] | None) -> list[int] | None:
    """The whole answer when the request's known tokens already end it (a stop token, its budget, a stop
    text: wherever decoding them one by one would have stopped), else None: the rest is to be decoded."""
    if request.budget <= 0:
        return []
    for count, token in enumerate(request.known, 1):
        if token in stop_ids:
            return request.known[: count - 1]
        if count >= request.budget or (finished is not None and finished(request.known[:count])):
            return request.known[:count]
    return None
