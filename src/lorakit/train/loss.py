"""Cross-entropy on supervised tokens only, without ever building the full logits.

The decoder runs on every token, but the output head only matters where a label exists. So the
hidden states at supervised positions are gathered first, and the head + cross-entropy run over
them in chunks of ``chunk_tokens``. The gradient of each chunk is computed in the same pass and
kept (it is ``[chunk x hidden]``, small), so backward costs nothing extra and at most one chunk
of ``[chunk x vocab]`` logits exists at any time. For Gemma-3 (262k vocabulary) that is 1 GiB
per 1024 tokens instead of 4 GiB for a batch of 4k tokens, and a prompt token never touches
the head at all.
"""

from __future__ import annotations

from typing import Any

import torch

from lorakit.model.attention import uses_segments
from lorakit.model.head import head_logits


def chunk_logits(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  softcap: float | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """float32 logits of one chunk, and tanh(z / cap) when soft-capped (kept for the gradient); rows past
    ``len(h)`` are padding (``model.head.head_logits``)."""
    logits = head_logits(h, weight)
    if logits.dtype != torch.float32:
        logits = logits.float()
    if bias is not None:
        logits += bias.float()
    if not softcap:
        return logits, None
    capped = logits.div_(softcap).tanh_()
    return capped * softcap, capped


class _ChunkedHeadCrossEntropy(torch.autograd.Function):
    """sum_i CE(softcap(h_i W^T + b), y_i), with its gradients computed chunk by chunk in forward."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor, chunk_tokens: int, softcap: float | None,
                need_grad: bool) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if need_grad and hidden.requires_grad else None
        grad_weight = torch.zeros_like(weight) if need_grad and weight.requires_grad else None
        grad_bias = torch.zeros_like(bias) if need_grad and bias is not None and bias.requires_grad else None
        for start in range(0, hidden.shape[0], chunk_tokens):
            h = hidden[start : start + chunk_tokens]
            y = targets[start : start + chunk_tokens]
            n = len(y)
            logits, capped = chunk_logits(h, weight, bias, softcap)  # padding rows after the n: worked on, not read
            target_logits = logits[:n].gather(1, y[:, None]).squeeze(1)
            # The softmax is built in the logits' own memory: with soft-capping a chunk holds two
            # [chunk x vocab] buffers at most, without it one (the chunk is the peak on Gemma's 262k rows).
            row_max = logits.amax(dim=-1, keepdim=True)
            probs = logits.sub_(row_max).exp_()
            sums = probs.sum(dim=-1, keepdim=True)
            total += (row_max + sums.log())[:n].squeeze(1).sub_(target_logits).sum()
            if grad_hidden is None and grad_weight is None and grad_bias is None:
                continue
            # d CE / d logits = softmax - onehot.
            grad = probs.div_(sums)
            grad[torch.arange(n, device=y.device), y] -= 1.0
            if capped is not None:  # d(cap * tanh(z / cap)) / dz = 1 - tanh^2
                grad.mul_(capped.square_().neg_().add_(1.0))
            grad = grad[:n].to(h.dtype)
            if grad_hidden is not None:
                grad_hidden[start : start + chunk_tokens] = grad @ weight
            if grad_weight is not None:
                grad_weight += grad.T @ h
            if grad_bias is not None:
                grad_bias += grad.sum(0).to(grad_bias.dtype)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        scale = grad_output.to(torch.float32)
        return (
            None if grad_hidden is None else grad_hidden * scale.to(grad_hidden.dtype),
            None if grad_weight is None else grad_weight * scale.to(grad_weight.dtype),
            None if grad_bias is None else grad_bias * scale.to(grad_bias.dtype),
            None, None, None, None,
        )


def chunked_head_loss(hidden: torch.Tensor, head: torch.nn.Linear, targets: torch.Tensor, chunk_tokens: int,
                      softcap: float | None = None) -> torch.Tensor:
    """Summed cross-entropy of ``head(hidden)`` against ``targets`` (both already gathered).

    Args:
        hidden: ``[n, hidden_size]`` states at supervised positions.
        head: the output projection (its weight may be tied to the embeddings).
        targets: ``[n]`` token ids to predict.
        chunk_tokens: rows of logits built at a time.
        softcap: Gemma-style final logit soft-capping, ``cap * tanh(logits / cap)``.

    Returns:
        A float32 scalar: the sum (not the mean) of the per-token losses.
    """
    need_grad = torch.is_grad_enabled()
    return _ChunkedHeadCrossEntropy.apply(hidden, head.weight, head.bias, targets, chunk_tokens, softcap, need_grad)


def naive_head_loss(hidden: torch.Tensor, head: torch.nn.Linear, targets: torch.Tensor,
                    softcap: float | None = None) -> torch.Tensor:
    """The reference: full logits, then summed cross-entropy. For tests only."""
    logits = head(hidden).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return torch.nn.functional.cross_entropy(logits, targets, reduction="sum")


def causal_lm_parts(model: Any) -> tuple[Any, torch.nn.Linear, float | None]:
    """The decoder, output head and logit soft-cap of a (possibly PEFT-wrapped) causal LM."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    softcap = getattr(lm.config, "final_logit_softcapping", None)
    return lm.get_decoder(), lm.get_output_embeddings(), softcap


def batch_loss(model: Any, batch: dict[str, torch.Tensor], chunk_tokens: int,
               noise_alpha: float | None = None) -> torch.Tensor:
    """Summed next-token loss of one padding-free batch (see ``lorakit.data.packing``); ``noise_alpha``: NEFTune's
    noise on the input embeddings (``lorakit.train.neftune``).

    The supervised positions are indexed with ``batch["target_index"]``, built on the host, so
    gathering them needs no device-to-host sync.
    """
    hidden, targets, head, softcap = supervised_states(model, batch, noise_alpha)
    return chunked_head_loss(hidden, head, targets, chunk_tokens, softcap)


def supervised_states(model: Any, batch: dict[str, torch.Tensor],
                      noise_alpha: float | None = None) -> tuple[torch.Tensor, torch.Tensor, Any, Any]:
    """The decoder's hidden states at the batch's supervised positions, their targets, the head and soft-cap."""
    decoder, head, softcap = causal_lm_parts(model)
    extra: dict[str, Any] = {"lorakit_segments": batch["segments"]} if uses_segments(model) else {}
    if noise_alpha:
        from lorakit.train.neftune import with_noise

        embedded = decoder.get_input_embeddings()(batch["input_ids"])  # scaled as the decoder scales it (Gemma)
        extra["inputs_embeds"] = with_noise(embedded, batch["segments"], noise_alpha)
    else:
        extra["input_ids"] = batch["input_ids"]
    # No KV cache: with one, transformers skips the packed-sequence mask and attention would leak
    # across example borders.
    hidden = decoder(position_ids=batch["position_ids"], use_cache=False, **extra).last_hidden_state
    index = batch["target_index"]
    hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, index)
    targets = batch["targets"].reshape(-1).index_select(0, index)
    return hidden, targets, head, softcap


class SupervisedLoss(torch.nn.Module):
    """A causal LM whose ``forward`` is ``batch_loss``.

    This is the module the accelerator wraps for DDP or FSDP: their gradient hooks are set up by
    the wrapper's forward, so the loss must be computed *through* it, not on the inner model.
    """

    def __init__(self, model: Any, noise_alpha: float | None = None) -> None:
        super().__init__()
        self.model = model
        self.noise_alpha = noise_alpha  # NEFTune's, on training steps only
        # What FSDP's transformer-based wrapping looks for: the decoder layer classes.
        lm = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._no_split_modules = getattr(lm, "_no_split_modules", None)

    def forward(self, batch: dict[str, torch.Tensor], chunk_tokens: int) -> torch.Tensor:
        return batch_loss(self.model, batch, chunk_tokens, self.noise_alpha if self.training else None)


def as_loss_module(model: Any) -> torch.nn.Module:
    """``model`` itself when it is a (wrapped) SupervisedLoss, else a SupervisedLoss around it."""
    inner = getattr(model, "module", model)  # DDP keeps the wrapped module there
    return model if isinstance(inner, SupervisedLoss) else SupervisedLoss(model)


def trained_model(loss_module: torch.nn.Module) -> Any:
    """The causal LM inside a (possibly DDP-wrapped) loss module."""
    return getattr(loss_module, "module", loss_module).model
