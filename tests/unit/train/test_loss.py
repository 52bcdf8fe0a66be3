import pytest
import torch

from lorakit.data.packing import collate
from lorakit.data.tokenize import IGNORE, Example
from lorakit.model.attention import SEGMENTED, register
from lorakit.train.loss import batch_loss, chunked_head_loss, naive_head_loss
from tests.conftest import build_model


@pytest.mark.parametrize("softcap", [None, 3.0])
@pytest.mark.parametrize("chunk", [1, 5, 1000])
@pytest.mark.parametrize("head_trainable", [False, True])
def test_chunked_loss_and_gradients_equal_the_naive_ones(softcap, chunk, head_trainable):
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False).double()
    head.weight.requires_grad_(head_trainable)
    hidden = torch.randn(23, 16, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (23,))

    fast = chunked_head_loss(hidden, head, targets, chunk, softcap)
    fast.backward()
    fast_grads = (hidden.grad.clone(), head.weight.grad.clone() if head_trainable else None)
    hidden.grad = None
    head.weight.grad = None
    slow = naive_head_loss(hidden, head, targets, softcap)
    slow.backward()

    # float32 sums over chunks instead of one pass: rounding of ~1e-7 relative per term, so 1e-5 relative,
    # and for gradients an absolute floor of 1e-5 of each tensor's own scale (components near zero).
    torch.testing.assert_close(fast.double(), slow.double(), rtol=1e-5, atol=1e-5)
    scale = hidden.grad.abs().max().item()
    torch.testing.assert_close(fast_grads[0], hidden.grad, rtol=1e-5, atol=1e-5 * scale)
    if head_trainable:
        scale = head.weight.grad.abs().max().item()
        torch.testing.assert_close(fast_grads[1], head.weight.grad, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("attention", ["sdpa", SEGMENTED])
@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_packed_batch_equals_examples_run_one_at_a_time(kind, attention):
    """Padding-free packing is exact: the same loss and adapter gradients as separate sequences.

    The reference runs each example alone through the stock SDPA attention. The third example is
    longer than the tiny Gemma-3's sliding window (16), so the local layers' window is exercised.
    """
    from peft import LoraConfig, get_peft_model

    model = build_model(kind, softcap=5.0 if kind == "gemma3" else None)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    long = list(range(20, 45))
    examples = [Example([5, 6, 7, 8, 9], [IGNORE, IGNORE, 7, 8, 9]),
                Example([10, 11, 12], [10, 11, 12]),
                Example(long, [IGNORE] * 4 + long[4:])]

    def loss_and_grads(rows_list, implementation):
        register()
        model.get_base_model().set_attn_implementation(implementation)
        model.zero_grad()
        total = sum(batch_loss(model, collate(rows, 0).to_tensors(), 4) for rows in rows_list)
        total.backward()
        return total.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    single_loss, single_grads = loss_and_grads([[[e]] for e in examples], "sdpa")
    packed_loss, packed_grads = loss_and_grads([[examples]], attention)  # one row holding all three
    padded_loss, _ = loss_and_grads([[[examples[0]], [examples[1]], [examples[2]]]], attention)  # three rows
    # the same float32 sums in another order (one packed row vs three): rounding only
    torch.testing.assert_close(packed_loss, single_loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(padded_loss, single_loss, rtol=1e-5, atol=1e-5)
    for name, grad in packed_grads.items():
        # 1e-5 relative to the gradient's scale: float32 rounding differs with the batch's shape.
        scale = single_grads[name].abs().max().item()
        torch.testing.assert_close(grad, single_grads[name], rtol=1e-5, atol=1e-5 * scale, msg=name)


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_a_prompt_the_examples_share_computed_once_gives_the_same_loss_and_gradients(kind):
    """The instruction every example of a row begins with, laid once (``share_prompts``), each example attending
    to it: the loss and adapter gradients of the row laid whole. The third example is longer than the tiny
    Gemma-3's sliding window (16), so the window is counted from the shared prompt as well."""
    from peft import LoraConfig, get_peft_model

    model = build_model(kind, softcap=5.0 if kind == "gemma3" else None)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    register()
    model.get_base_model().set_attn_implementation(SEGMENTED)
    instruction = [2, 5, 6, 7, 8, 9]
    answers = [[30, 31], [32, 33, 34], list(range(20, 40))]
    examples = [Example([*instruction, 10 + i, *a], [IGNORE] * 7 + a) for i, a in enumerate(answers)]

    def loss_and_grads(share):
        model.zero_grad()
        batch = collate([examples], 0, share_prompts=share)
        loss = batch_loss(model, batch.to_tensors(), 4)
        loss.backward()
        return batch, loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    whole, whole_loss, whole_grads = loss_and_grads(False)
    shared, shared_loss, shared_grads = loss_and_grads(True)
    assert shared.num_computed == whole.num_computed - 2 * 5  # the instruction but its last token: once, not 3 times
    # the same float32 sums in another order (the shared prompt's keys computed in a shorter row): rounding only
    torch.testing.assert_close(shared_loss, whole_loss, rtol=1e-5, atol=1e-5)
    for name, grad in shared_grads.items():
        scale = whole_grads[name].abs().max().item()  # 1e-5 of the gradient's scale: float32 rounding, as above
        torch.testing.assert_close(grad, whole_grads[name], rtol=1e-5, atol=1e-5 * scale, msg=name)


def test_segmented_attention_is_used_only_when_segments_are_passed():
    """Generation and padded batches (no segments) go through the stock masked SDPA path."""
    register()
    model = build_model("llama")
    ids = torch.tensor([[5, 6, 7, 8, 0, 0], [9, 10, 11, 12, 13, 14]])
    mask = (ids != 0).long()
    reference = model(input_ids=ids, attention_mask=mask).logits
    model.set_attn_implementation(SEGMENTED)
    torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits, reference)
    out = model.generate(ids[:1, :4], max_new_tokens=3, do_sample=False)
    model.set_attn_implementation("sdpa")
    torch.testing.assert_close(out, model.generate(ids[:1, :4], max_new_tokens=3, do_sample=False))


def test_batch_loss_equals_the_models_own_loss():
    model = build_model("gemma3", softcap=5.0)
    ids = [2, 7, 8, 9, 10, 11]
    labels = [IGNORE, IGNORE, 8, 9, 10, 11]
    ours = batch_loss(model, collate([[Example(ids, labels)]], 0).to_tensors(), 2) / 4
    theirs = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)  # float32, chunked vs whole: rounding only
