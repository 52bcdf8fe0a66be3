"""Per-token log-probabilities of targets, without ever building the full logits (DPO's building block).

As ``lorakit.train.loss`` does for the summed cross-entropy, the output head runs over the gathered
positions in chunks; each token's log-probability depends on its own hidden state only, so the gradient
of token i's log-probability with respect to its hidden state (``(onehot - softmax) W``, through the
soft-cap) is computed in the forward pass and kept, ``[n x hidden]``, and backward scales each row by the
upstream gradient of its token. The head's own weight, when it is trained, gets its gradient by
recomputing the chunks in backward (it is frozen under LoRA, so that path is rarely taken).
"""

from __future__ import annotations

from typing import Any

import torch

from lorakit.train.loss import chunk_logits


def _softmax_grad(logits: torch.Tensor, capped: torch.Tensor | None, targets: torch.Tensor) -> tuple[Any, Any]:
    """(log-probabilities of ``targets``, d logp / d pre-cap logits) of one chunk; uses ``logits``' memory, whose
    rows past ``len(targets)`` are padding (``model.head.head_logits``): worked on with the rest, not returned."""
    n = len(targets)
    target_logits = logits[:n].gather(1, targets[:, None]).squeeze(1)
    row_max = logits.amax(dim=-1, keepdim=True)
    probs = logits.sub_(row_max).exp_()
    sums = probs.sum(dim=-1, keepdim=True)
    logp = target_logits - (row_max + sums.log())[:n].squeeze(1)
    grad = probs.div_(sums).neg_()
    grad[torch.arange(n, device=targets.device), targets] += 1.0
    if capped is not None:  # d(cap * tanh(z / cap)) / dz = 1 - tanh^2
        grad.mul_(capped.square_().neg_().add_(1.0))
    return logp, grad[:n]


class _ChunkedHeadLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor, chunk_tokens: int, softcap: float | None, need_grad: bool) -> torch.Tensor:
        logps = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if need_grad and hidden.requires_grad else None
        for start in range(0, hidden.shape[0], chunk_tokens):
            h = hidden[start : start + chunk_tokens]
            logits, capped = chunk_logits(h, weight, bias, softcap)
            logp, grad = _softmax_grad(logits, capped, targets[start : start + chunk_tokens])
            logps[start : start + chunk_tokens] = logp
            if grad_hidden is not None:
                grad_hidden[start : start + chunk_tokens] = grad.to(h.dtype) @ weight
        ctx.chunk_tokens, ctx.softcap = chunk_tokens, softcap
        head_trained = need_grad and (weight.requires_grad or (bias is not None and bias.requires_grad))
        ctx.save_for_backward(grad_hidden, hidden if head_trained else None, weight, bias, targets)
        return logps

    @staticmethod
    def backward(ctx: Any, grad_logps: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_hidden, hidden, weight, bias, targets = ctx.saved_tensors
        upstream = grad_logps.to(torch.float32)
        d_hidden = None if grad_hidden is None else grad_hidden * upstream[:, None].to(grad_hidden.dtype)
        d_weight = d_bias = None
        if hidden is not None:  # the head itself is trained: recompute its chunks
            d_weight = torch.zeros_like(weight) if weight.requires_grad else None
            d_bias = torch.zeros_like(bias) if bias is not None and bias.requires_grad else None
            for start in range(0, hidden.shape[0], ctx.chunk_tokens):
                h = hidden[start : start + ctx.chunk_tokens]
                logits, capped = chunk_logits(h.detach(), weight.detach(), bias, ctx.softcap)
                _, grad = _softmax_grad(logits, capped, targets[start : start + ctx.chunk_tokens])
                grad.mul_(upstream[start : start + ctx.chunk_tokens, None])
                if d_weight is not None:
                    d_weight += grad.to(h.dtype).T @ h
                if d_bias is not None:
                    d_bias += grad.sum(0).to(d_bias.dtype)
        return d_hidden, d_weight, d_bias, None, None, None, None


def chunked_head_logprobs(hidden: torch.Tensor, head: torch.nn.Linear, targets: torch.Tensor, chunk_tokens: int,
                          softcap: float | None = None) -> torch.Tensor:
    """float32 ``[n]``: log softmax(softcap(head(hidden)))[targets], row by row, differentiable in ``hidden``."""
    need_grad = torch.is_grad_enabled()
    return _ChunkedHeadLogProbs.apply(hidden, head.weight, head.bias, targets, chunk_tokens, softcap, need_grad)
