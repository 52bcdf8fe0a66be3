import torch

from lorakit.config.schema import LoraSection
from lorakit.model.adapters import attach_adapter
from lorakit.model.compile import compile_mlps
from tests.conftest import build_model


def test_compiled_mlps_give_the_same_logits_for_any_length():
    model = attach_adapter(build_model("llama"), LoraSection(r=4, alpha=8))
    short, long = torch.tensor([[5, 6, 7]]), torch.tensor([[5, 6, 7, 8, 9, 10, 11]])
    expected = [model(input_ids=ids).logits for ids in (short, long)]
    assert compile_mlps(model) == model.config.num_hidden_layers
    for ids, reference in zip((short, long), expected, strict=True):
        # compiled kernels fuse and reorder float32 ops: logits of size ~1 differ by rounding (~1e-6) only
        torch.testing.assert_close(model(input_ids=ids).logits, reference, rtol=1e-5, atol=1e-5)
