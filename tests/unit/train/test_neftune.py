"""NEFTune: noise on the trained steps' input embeddings, scaled by each example's own length; none in evaluation."""

import pytest
import torch

from lorakit.data.packing import collate
from lorakit.data.tokenize import IGNORE, Example
from lorakit.model.attention import SEGMENTED, register
from lorakit.train.loss import SupervisedLoss
from lorakit.train.neftune import example_lengths, with_noise
from tests.conftest import build_model


def test_each_position_takes_its_examples_length_and_a_prompt_laid_once_counts_for_each_example():
    assert example_lengths([[(0, 3), (3, 5), (5, 8)]], 8) == [[3, 3, 3, 2, 2, 3, 3, 3]]
    # a 4-token prompt laid once, then two examples of 3 and 2 tokens reading it: 7 and 6 tokens each
    assert example_lengths([[(0, 4), (4, 7, 0, 4), (7, 9, 0, 4)]], 9) == [[7] * 4 + [7] * 3 + [6] * 2]
    # rows of a micro-batch each on their own; the shorter one's padding is a segment of its own
    assert example_lengths([[(0, 4)], [(0, 2), (2, 4)]], 4) == [[4] * 4, [2] * 4]


def test_the_noise_is_uniform_within_alpha_over_the_root_of_length_times_width():
    torch.manual_seed(0)
    hidden, alpha = 256, 5.0
    embeddings = torch.zeros(1, 20, hidden)
    noise = with_noise(embeddings, [[(0, 4), (4, 20)]], alpha)[0]
    for span, length in (((0, 4), 4), ((4, 20), 16)):
        bound = alpha / (length * hidden) ** 0.5
        part = noise[span[0]:span[1]].abs()
        # U(-bound, bound): never beyond it, and of 1,024 draws or more the largest is within 1% of it
        # (the chance that all fall below 0.99 x bound is 0.99^1024, about 3e-5)
        assert part.max() <= bound and part.max() > 0.99 * bound
    # centred: the mean of 5,120 draws has a standard deviation under 1% of the largest bound
    assert noise.mean().abs() < 0.1 * alpha / (4 * hidden) ** 0.5


@pytest.mark.parametrize("kind, attention", [("llama", "sdpa"), ("gemma3", SEGMENTED)])
def test_training_steps_see_the_noise_and_evaluation_does_not(kind, attention):
    from peft import LoraConfig, get_peft_model

    register()
    model = get_peft_model(build_model(kind), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    model.get_base_model().set_attn_implementation(attention)
    batch = collate([[Example([5, 6, 7, 8, 9], [IGNORE, IGNORE, 7, 8, 9]), Example([10, 11, 12], [10, 11, 12])]],
                    0).to_tensors()
    plain, noisy = SupervisedLoss(model), SupervisedLoss(model, noise_alpha=5.0)
    plain.train(), noisy.train()
    torch.manual_seed(0)
    clean = plain(batch, 4).item()
    trained = noisy(batch, 4)
    trained.backward()  # the noise is no leaf: gradients reach the adapter through it
    assert trained.item() != clean
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters() if p.requires_grad)
    noisy.eval()
    assert noisy(batch, 4).item() == plain.eval()(batch, 4).item()  # evaluation: the same model, no noise


def test_under_neftune_each_example_of_a_training_row_has_its_own_prompt_and_noise(tmp_path, tiny_model_dir,
                                                                                   monkeypatch):
    """A prompt laid once for a row's examples would take one draw of noise for all of them; the HF trainer's
    examples each have their own copy. Evaluation (no noise) still shares it."""
    from lorakit.train import loop
    from tests.conftest import write_jsonl
    from tests.unit.cli.test_train import invoke, make_config

    instruction = "Rewrite the following sentence in the passive voice, keeping its tense and meaning"
    rows = [{"instruction": instruction, "input": f"The cat {verb} the mouse.", "output": f"The mouse {done}."}
            for verb, done in [("chased", "was chased"), ("sees", "is seen"), ("caught", "was caught"),
                               ("bit", "was bitten"), ("likes", "is liked"), ("found", "was found")] * 4]
    shares, real = [], loop.collate
    monkeypatch.setattr(loop, "collate", lambda rows, pad, share=False: shares.append(share) or real(rows, pad, share))
    for alpha in (None, 5.0):
        config = make_config(tmp_path, tiny_model_dir, train={"max_steps": 2, "micro_batch_size": 4,
                                                              "neftune_noise_alpha": alpha})
        write_jsonl(tmp_path / "train.jsonl", rows)
        shares.clear()
        assert invoke("train", config).exit_code == 0
        assert shares and all(shares) == (alpha is None) and any(shares) == (alpha is None)
