"""DPO: lorakit's preference loss and rewards against TRL's DPOTrainer on the same batch, and the log-probability
function's gradient against autograd through full logits."""

import pytest
import torch

from lorakit.config.schema import DpoSection
from lorakit.data.packing import collate
from lorakit.data.tokenize import IGNORE, Example, Pair
from lorakit.train.logprobs import chunked_head_logprobs
from lorakit.train.preference import PAIR_STATS, PreferenceLoss, measure_reference
from tests.conftest import build_model, build_tokenizer

PAIRS = [{"prompt": "what is two plus two ?", "chosen": " four", "rejected": " five six"},
         {"prompt": "the capital of france is", "chosen": " paris", "rejected": " red cat sat"},
         {"prompt": "say hello", "chosen": " hello there", "rejected": " no"},
         {"prompt": "translate to typst : x ^ 2", "chosen": " x ^ 2", "rejected": " x _ 2 ( )"},
         {"prompt": "translate to typst : x ^ 2", "chosen": " x _ 2 ( )", "rejected": " x ^ 2"}]  # the last swapped:
# whatever the adapter prefers, one of the last two pairs is right and the other wrong


@pytest.mark.parametrize("softcap", [None, 5.0])
def test_per_token_logprobs_and_their_gradient_equal_full_logits(softcap):
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    hidden = torch.randn(9, 16, requires_grad=True)
    targets = torch.randint(0, 50, (9,))
    upstream = torch.randn(9)
    ours = chunked_head_logprobs(hidden, head, targets, chunk_tokens=4, softcap=softcap)
    (ours * upstream).sum().backward()
    grad_ours = hidden.grad.clone()
    hidden.grad = None
    logits = head(hidden)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    reference = logits.log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    (reference * upstream).sum().backward()
    # float32 on 50 logits: the two orders of summation differ by a few ulps
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_ours, hidden.grad, rtol=1e-5, atol=1e-5)


def _trl_batch_and_metrics(loss_type, tmp_path):
    """TRL's DPOTrainer with a LoRA whose B matrices are random (so the adapter differs from its reference, the
    base model): its collated batch of all the pairs, its loss and its logged metrics on that batch."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=len(PAIRS), beta=0.3,
                     loss_type=[loss_type], report_to=[], max_length=None, use_cpu=True, bf16=False,
                     dataloader_num_workers=0)
    trainer = DPOTrainer(model=build_model("llama"), args=args, train_dataset=Dataset.from_list(PAIRS),
                         processing_class=build_tokenizer(chat_template=None),
                         peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                init_lora_weights=False))
    batch = next(iter(trainer.get_train_dataloader()))
    loss = trainer.compute_loss(trainer.model, batch)
    metrics = {name: values[-1] for name, values in trainer._metrics["train"].items()}
    return trainer.model, batch, loss.item(), metrics


def _pairs_of(batch) -> list[Pair]:
    """TRL's rows (chosen rows first, then rejected) as lorakit pairs: the real tokens, labels on the answer."""
    sequences = []
    for ids, real, answer in zip(batch["input_ids"], batch["attention_mask"], batch["completion_mask"], strict=True):
        ids, answer = ids[real.bool()].tolist(), answer[real.bool()].tolist()
        sequences.append(Example(ids, [t if a else IGNORE for t, a in zip(ids, answer, strict=True)]))
    half = len(sequences) // 2
    return [Pair(c, r) for c, r in zip(sequences[:half], sequences[half:], strict=True)]


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge"])
def test_loss_and_rewards_equal_trls_dpo_trainer(loss_type, tmp_path):
    model, batch, trl_loss, trl = _trl_batch_and_metrics(loss_type, tmp_path)
    pairs = _pairs_of(batch)
    with model.disable_adapter():  # the reference of a fresh adapter: the base model
        pairs = measure_reference(model, pairs, micro_batch_size=2, pad_id=0, chunk_tokens=7, device="cpu")
    loss_module = PreferenceLoss(model, DpoSection(beta=0.3, loss=loss_type))
    model.train()
    loss_sum, stats = loss_module(collate([pairs], pad_id=0).to_tensors(), 7)  # packed in one row, chunks of 7
    ours = {"loss": loss_sum.item() / len(pairs), **dict(zip(PAIR_STATS, (stats / len(pairs)).tolist(), strict=True))}
    assert 0 < trl["rewards/accuracies"] < 1  # the swapped pairs: the accuracy is tested, not a constant
    # float32 sums over a few tokens in another order (packed vs padded, chunked vs whole): 1e-4, the bound
    assert ours["loss"] == pytest.approx(trl_loss, abs=1e-4)
    for name in PAIR_STATS:
        assert ours[name] == pytest.approx(trl[name], abs=1e-4), name


def test_label_smoothing_flips_a_share_of_the_preference():
    policy = torch.tensor([-1.0, -3.0, -2.0, -1.5])
    reference = torch.tensor([-2.0, -2.0, -2.0, -2.0])
    counts = torch.tensor([2, 3, 2, 1])
    from lorakit.train.preference import pair_losses

    plain, _ = pair_losses(policy, reference, counts, DpoSection(beta=0.5))
    smooth, _ = pair_losses(policy, reference, counts, DpoSection(beta=0.5, label_smoothing=0.2))
    delta = torch.tensor([2.0, -0.5]) * 0.5  # beta x ((-1 + 2) - (-3 + 2)), beta x ((-2 + 2) - (-1.5 + 2))
    logsig = torch.nn.functional.logsigmoid
    torch.testing.assert_close(plain, -logsig(delta))
    torch.testing.assert_close(smooth, -0.8 * logsig(delta) - 0.2 * logsig(-delta))


def test_a_pair_is_one_item_of_a_row_and_its_targets_name_their_sequence():
    a = Pair(Example([5, 6, 7], [IGNORE, 6, 7]), Example([5, 6, 8, 9], [IGNORE, 6, 8, 9]), reference=(-1.0, -2.0))
    b = Pair(Example([5, 10], [IGNORE, 10]), Example([5, 11], [IGNORE, 11]), reference=(-3.0, -4.0))
    batch = collate([[a, b]], pad_id=0)
    assert batch.segments == [[(0, 3), (3, 7), (7, 9), (9, 11)]]  # four sequences, none crossing another
    assert batch.target_sequence == [0, 0, 1, 1, 1, 2, 3]  # targets are labels[1:] of each sequence
    assert batch.reference == [-1.0, -2.0, -3.0, -4.0] and batch.loss_units == batch.num_pairs == 2


def test_sft_weight_adds_the_chosen_answers_mean_token_loss():
    from lorakit.train.preference import pair_losses

    policy = torch.tensor([-1.0, -3.0, -2.0, -1.5])
    reference = torch.tensor([-2.0, -2.0, -2.0, -2.0])
    counts = torch.tensor([2, 3, 4, 1])
    plain, _ = pair_losses(policy, reference, counts, DpoSection())
    mixed, _ = pair_losses(policy, reference, counts, DpoSection(sft_weight=0.5))
    torch.testing.assert_close(mixed - plain, 0.5 * torch.tensor([1.0 / 2, 2.0 / 4]))


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_a_shared_prompt_computes_what_two_whole_sequences_compute(kind):
    from lorakit.model.attention import pick_attention
    from lorakit.train.preference import sequence_logps

    model = build_model(kind, sliding_window=6)  # Gemma's sliding layer: shorter than the sequences
    model.config._attn_implementation = pick_attention(model.config, "cpu", torch.float32)
    prompt = [2, 10, 11, 12, 13, 14, 15]
    pairs = [Pair(Example([*prompt, 20, 21], [IGNORE] * 7 + [20, 21]),
                  Example([*prompt, 22, 23, 24], [IGNORE] * 7 + [22, 23, 24]), reference=(0.0, 0.0)),
             Pair(Example([2, 30, 20], [IGNORE, IGNORE, 20]), Example([2, 30, 31, 32], [IGNORE, IGNORE, 31, 32]),
                  reference=(0.0, 0.0))]
    assert [p.shared_prompt for p in pairs] == [6, 1]
    whole = collate([pairs], pad_id=0)
    shared = collate([pairs], pad_id=0, share_prompts=True)
    assert shared.num_tokens == whole.num_tokens - 6 - 1 and shared.target_sequence == whole.target_sequence
    expected, counts = sequence_logps(model, whole.to_tensors(), 4)
    got, shared_counts = sequence_logps(model, shared.to_tensors(), 4)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)  # float32 sums in another order
    assert shared_counts.tolist() == counts.tolist() == [2, 3, 1, 2]
