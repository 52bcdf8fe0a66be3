"""The GPU path: packed attention exact on CUDA, bf16 and NF4 training, the out-of-memory ladder under a real
memory cap, the planner against measured CUDA memory. Marked gpu: skipped without CUDA; bench/gpu_check.sh
runs them on a GPU machine."""

import json

import pytest

pytestmark = pytest.mark.gpu


def test_packed_attention_on_cuda_equals_examples_one_at_a_time():
    """The CPU suite's exactness test, on the GPU's kernels (float32, so rounding stays comparable)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from lorakit.data.packing import collate
    from lorakit.data.tokenize import IGNORE, Example
    from lorakit.model.attention import SEGMENTED, register
    from lorakit.train.loss import batch_loss
    from tests.conftest import build_model

    for kind in ("llama", "gemma3"):
        model = build_model(kind, softcap=5.0 if kind == "gemma3" else None).cuda()
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                 init_lora_weights=False))
        long = list(range(20, 45))
        examples = [Example([5, 6, 7, 8, 9], [IGNORE, IGNORE, 7, 8, 9]), Example([10, 11, 12], [10, 11, 12]),
                    Example(long, [IGNORE] * 4 + long[4:])]

        def loss_and_grads(rows_list, implementation, model=model):
            register()
            model.get_base_model().set_attn_implementation(implementation)
            model.zero_grad()
            total = sum(batch_loss(model, collate(rows, 0).to_tensors("cuda"), 4) for rows in rows_list)
            total.backward()
            return total.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

        single_loss, single_grads = loss_and_grads([[[e]] for e in examples], "sdpa")
        packed_loss, packed_grads = loss_and_grads([[examples]], SEGMENTED)
        # float32 on CUDA: TF32 is off by default for matmuls here, so rounding only, as on the CPU
        torch.testing.assert_close(packed_loss, single_loss, rtol=1e-4, atol=1e-4)
        for name, grad in packed_grads.items():
            scale = single_grads[name].abs().max().item()
            torch.testing.assert_close(grad, single_grads[name], rtol=1e-4, atol=1e-4 * scale, msg=name)


def _train(tmp_path, model_dir, name, **train):
    from lorakit.config import load_config
    from lorakit.recipe.run import run_training
    from tests.unit.cli.test_train import make_config

    config = make_config(tmp_path, model_dir, train={"max_steps": 12, "log_every": 1, **train})
    return run_training(load_config(config, overrides=[f"output.name={name}"]))


def test_bf16_training_on_cuda_learns(tmp_path, tiny_model_dir):
    outcome = _train(tmp_path, tiny_model_dir, "bf16", micro_batch_size=4, grad_accum=1)
    log = [json.loads(line) for line in (outcome.run_dir / "trainer_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses[-1] < losses[0]


def test_nf4_qlora_trains_on_cuda(tmp_path, tiny_model_dir):
    pytest.importorskip("bitsandbytes")
    from lorakit.config import load_config
    from lorakit.recipe.run import run_training
    from tests.unit.cli.test_train import make_config

    config = make_config(tmp_path, tiny_model_dir, model={"quantization": "nf4"},
                         train={"max_steps": 12, "log_every": 1, "lr": 0.01})
    outcome = run_training(load_config(config))
    log = [json.loads(line) for line in (outcome.run_dir / "trainer_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert outcome.status == "completed" and losses[-1] < losses[0]
