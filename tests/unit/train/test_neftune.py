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
