"""A stand-in for kohya-ss sd-scripts' train_network.py: the same config keys, the same files out, no GPU.

Reads --config_file (TOML): output_dir, output_name, max_train_steps, save_every_n_steps, logging_dir,
sample_prompts, network_dim. Writes <output_name>-<step:06d>.safetensors every save_every_n_steps and
<output_name>.safetensors at the end (with ss_* metadata), sample/<name>_<step:06d>_<prompt:02d>_<time>.png per
prompt at each save, and TensorBoard scalars (loss/current, lr/unet) under logging_dir. Test switches:
`standin_fail = "cuda_oom"` prints sd-scripts' real CUDA out-of-memory traceback unless `lowmem = true`;
"sigkill" dies by SIGKILL unless lowmem (the kernel's OOM killer); "exit3" fails with exit code 3 after a
progress bar; "wait" runs a worker process (as accelerate launch does) and waits for a signal.
"""

import argparse
import math
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import tomllib
from safetensors.numpy import save_file

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")
CUDA_OOM = """Traceback (most recent call last):
  File "/home/u/sd-scripts/train_network.py", line 1115, in <module>
    trainer.train(args)
  File "/home/u/sd-scripts/train_network.py", line 885, in train
    accelerator.backward(loss)
  File "/home/u/venv/lib/python3.10/site-packages/torch/autograd/__init__.py", line 289, in backward
    _engine_run_backward(
torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 7.79 GiB \
of which 1.12 GiB is free. Including non-PyTorch memory, this process has 6.65 GiB memory in use. Of the allocated \
memory 6.02 GiB is allocated by PyTorch, and 402.27 MiB is reserved by PyTorch but unallocated. If reserved but \
unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation."""


def progress(step, total):
    sys.stderr.write(f"\rsteps: {100 * step // total:3d}%|{'#' * step}{' ' * (total - step)}| {step}/{total} "
                     "[00:01<00:00,  9.50it/s, avr_loss=0.123]")
    sys.stderr.flush()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config_file", required=True)
    config = tomllib.loads(pathlib.Path(parser.parse_args().config_file).read_text())
    out = pathlib.Path(config["output_dir"])
    name, steps = config["output_name"], int(config.get("max_train_steps", 10))
    print(f"DEBUG={os.environ.get('DEBUG', '')}")
    fail = config.get("standin_fail")
    if fail == "wait":
        worker = subprocess.Popen([sys.executable, "-c", WORKER, str(out / "worker-got"), str(out / "worker-ready")])
        signal.signal(signal.SIGINT, lambda *_: (worker.wait(), sys.exit(130)))
        while not (out / "worker-ready").is_file():  # ready only once the worker's own handler is in place
            time.sleep(0.05)
        (out / "launcher-ready").write_text("")
        time.sleep(120)
        sys.exit(1)
    if fail == "exit3":
        progress(1, steps)
        print("\nValueError: train_data_dir has no images", file=sys.stderr)
        progress(2, steps)
        sys.exit(3)
    if fail in ("cuda_oom", "sigkill") and not config.get("lowmem"):
        progress(1, steps)
        if fail == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        print("\n" + CUDA_OOM, file=sys.stderr)
        progress(1, steps)  # the bar is redrawn after the traceback, as tqdm does
        sys.exit(1)
    images = sorted(pathlib.Path(config["train_data_dir"]).glob("*.png"))
    prompts = [p for p in pathlib.Path(config["sample_prompts"]).read_text().splitlines() if p.strip()] \
        if config.get("sample_prompts") else []
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(pathlib.Path(config["logging_dir"]) / f"{name}{time.strftime('%Y%m%d%H%M%S')}"))
    every = int(config.get("save_every_n_steps", steps))
    dim = int(config.get("network_dim", 4))
    meta = {"ss_network_dim": str(dim), "ss_network_alpha": str(config.get("network_alpha", 1)),
            "ss_max_train_steps": str(steps), "ss_num_train_images": str(len(images)),
            "ss_sd_model_name": config.get("pretrained_model_name_or_path", "sd_xl_base_1.0.safetensors"),
            "modelspec.architecture": "stable-diffusion-xl-v1-base/lora", "other": "not recorded"}
    for step in range(1, steps + 1):
        writer.add_scalar("loss/current", 1.0 / math.sqrt(step), step)
        writer.add_scalar("lr/unet", 1e-4, step)
        progress(step, steps)
        if step % every == 0:
            tensors = {"lora_unet_down.lora_down.weight": np.full((dim, 8), step, dtype=np.float32)}
            last = step == steps
            save_file(tensors, str(out / (f"{name}.safetensors" if last else f"{name}-{step:06d}.safetensors")),
                      metadata=meta)
            for i, _ in enumerate(prompts):
                (out / "sample").mkdir(exist_ok=True)
                (out / "sample" / f"{name}_{step:06d}_{i:02d}_20261129120000_42.png").write_bytes(PNG)
    writer.close()
    print(f"\nmodel saved: {name}.safetensors ({len(images)} images)")


WORKER = """
import pathlib, signal, sys, time
signal.signal(signal.SIGINT, lambda *_: (pathlib.Path(sys.argv[1]).write_text("SIGINT"), sys.exit(130)))
pathlib.Path(sys.argv[2]).write_text("")
time.sleep(120)
"""

if __name__ == "__main__":
    main()
