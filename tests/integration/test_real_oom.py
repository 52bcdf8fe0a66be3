"""A real out-of-memory on the CPU: lorakit train under an address-space limit (RLIMIT_AS, as `ulimit -v`).

The driver imports the libraries first, then caps its address space at what it has mapped plus
a headroom that one example's activations fit in but a micro-batch of all of them does not. The
CPU allocator's failure (a RuntimeError, not torch.OutOfMemoryError) must send the run down the
ladder to a micro-batch that fits, and the run must finish.
"""

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import WORDS, build_tokenizer, write_jsonl

HEADROOM = 2 << 30  # 2 GiB above what the imports mapped

DRIVER = f"""
import resource, sys
import accelerate, peft, torch, transformers  # map the libraries before the cap
import lorakit.recipe.run, lorakit.train.loop, lorakit.model.load, lorakit.data.dataset
from lorakit.cli.main import cli
torch.set_num_threads(1)
mapped = int(open("/proc/self/statm").read().split()[0]) * 4096
resource.setrlimit(resource.RLIMIT_AS, (mapped + {HEADROOM}, mapped + {HEADROOM}))
cli.main(args=sys.argv[1:])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux")
def test_a_real_cpu_allocation_failure_is_recovered(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    model_dir = tmp_path / "wide-llama"
    tokenizer = build_tokenizer()
    # Wide MLPs: one micro-batch of 32 long examples needs several GiB of activations, one example ~0.1 GiB.
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=16384, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                         pad_token_id=0, eos_token_id=1, bos_token_id=2)
    LlamaForCausalLM(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    words = [w for w in WORDS if w.isalpha()]
    rows = [{"prompt": " ".join(words[(i + j) % len(words)] for j in range(200)),
             "completion": " ".join(words[(i * 7 + j) % len(words)] for j in range(200))} for i in range(32)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    cfg = {"model": {"name_or_path": str(model_dir)},
           "data": {"train": "train.jsonl", "val_size": 0, "max_length": 512},
           "train": {"max_steps": 1, "micro_batch_size": 32, "grad_accum": 1, "log_every": 1,
                     "oom": {"ladder": ["micro_batch"]}},
           "output": {"name": "capped"}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))

    # One malloc arena: each extra thread arena reserves 64 MiB of address space, which would make
    # the headroom depend on how many threads the libraries happen to start.
    env = {**os.environ, "MALLOC_ARENA_MAX": "1"}
    out = subprocess.run([sys.executable, "-c", DRIVER, "train", "config.yaml"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    manifest = json.loads((tmp_path / "runs" / "capped-v001" / "manifest.json").read_text())
    attempts = manifest["attempts"]
    assert len(attempts) >= 2
    assert "can't allocate memory" in attempts[0]["error"]  # the CPU allocator's own failure
    assert attempts[-1]["step_reached"] == 1 and manifest["status"] == "completed"
    assert "micro_batch_size 32 -> 16" in out.stderr
