"""The lane decoder's keys and values: per layer, one slot per lane and one column per token of its prompt and
answer, written in place (``lanes``)."""

from __future__ import annotations

from typing import Any

# A lane's keys and values for its whole prompt and answer are kept; this caps the buffers when the caller asks
# for many lanes of a large model (lanes are cut to fit, never the answers).
CACHE_BYTES = 4 << 30


class LaneCache:
    """Per-layer key/value buffers [lanes, kv heads, columns, head dim], passed to the model as its ``cache``.

    The model calls ``update`` once per attention layer; what it does depends on the step:

    - the shared prefix (the prompt's start every request has: the template, an instruction) is computed
      once and kept;
    - a prefill copies the prefix into the newcomers' slots, writes the rest of their prompts after it, and
      attends to both;
    - a decode step writes a few columns per busy lane (its last token and the tokens drafted after it, each
      lane at its own columns) and attends to every column.
    """

    def __init__(self, lanes: int, columns: int) -> None:
        self.lanes, self.columns = lanes, columns
        self.keys: dict[int, Any] = {}
        self.values: dict[int, Any] = {}
        self.prefix_keys: dict[int, Any] = {}
        self.prefix_values: dict[int, Any] = {}
        self.prefix_length = 0
        self.mode = "prefix"
        self.rows: Any = None  # the lanes of this step
        self.write_at: Any = None  # decode: each row's columns [rows, tokens]
        self.read_to = 0  # decode: columns 0..read_to are returned

    def prefill(self, rows: Any) -> None:
        self.mode, self.rows = "prefill", rows

    def decode(self, rows: Any, write_at: Any, read_to: int) -> None:
        self.mode, self.rows, self.write_at, self.read_to = "decode", rows, write_at, read_to

    def restore(self, row: int, states: list[tuple[Any, Any]], dtype: Any) -> None:
        """Write one lane's keys and values, computed elsewhere ([kv heads, tokens, head dim] per layer), at its
        first columns."""
        for layer_idx, (key, value) in enumerate(states):
            key, value = key.to(dtype), value.to(dtype)
            keys, values = self._buffers(layer_idx, key[None])
            keys[row, :, : key.shape[1]] = key
            values[row, :, : value.shape[1]] = value

    def update(self, key_states: Any, value_states: Any, layer_idx: int, *args: Any, **kwargs: Any) -> Any:
        if self.mode == "prefix":
            self.prefix_keys[layer_idx], self.prefix_values[layer_idx] = key_states, value_states
            self.prefix_length = key_states.shape[2]
            return key_states, value_states
        keys, values = self._buffers(layer_idx, key_states)
        if self.mode == "prefill":
            start, end = self.prefix_length, self.prefix_length + key_states.shape[2]
            if start:
                keys[self.rows, :, :start] = self.prefix_keys[layer_idx]
                values[self.rows, :, :start] = self.prefix_values[layer_idx]
            keys[self.rows, :, start:end] = key_states
            values[self.rows, :, start:end] = value_states
            return keys[self.rows, :, :end], values[self.rows, :, :end]
        # [rows, 1] with [rows, tokens] index [rows, tokens, heads, dim]: the states with tokens before heads
        keys[self.rows[:, None], :, self.write_at] = key_states.transpose(1, 2)
        values[self.rows[:, None], :, self.write_at] = value_states.transpose(1, 2)
        if self.rows.numel() == self.lanes:  # every lane busy: a view, no copy
            return keys[:, :, : self.read_to], values[:, :, : self.read_to]
        return keys[self.rows, :, : self.read_to], values[self.rows, :, : self.read_to]

    def _buffers(self, layer_idx: int, like: Any) -> tuple[Any, Any]:
        import torch

        if layer_idx not in self.keys:
            shape = (self.lanes, like.shape[1], self.columns, like.shape[3])
            self.keys[layer_idx] = torch.zeros(shape, dtype=like.dtype, device=like.device)
            self.values[layer_idx] = torch.zeros(shape, dtype=like.dtype, device=like.device)
        return self.keys[layer_idx], self.values[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.read_to


def cache_budget(device: Any) -> int:
    """Bytes the key/value buffers may take: ``CACHE_BYTES``, and on a GPU at most half its free memory (a
    training run's evaluation shares it with the training)."""
    import torch

    if device.type == "cuda":
        return min(CACHE_BYTES, torch.cuda.mem_get_info(device)[0] // 2)
    return CACHE_BYTES


def kv_bytes_per_token(config: Any, element_bytes: int = 4) -> int:
    """Bytes of keys and values one token keeps in every layer."""
    layers = getattr(config, "num_hidden_layers", 1)
    heads = getattr(config, "num_key_value_heads", None) or getattr(config, "num_attention_heads", 1)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * layers * heads * head_dim * element_bytes
