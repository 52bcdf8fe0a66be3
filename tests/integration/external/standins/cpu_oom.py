"""A trainer that hits a real CPU out-of-memory: under an address-space limit, PyTorch's CPU allocator refuses
a tensor (`DefaultCPUAllocator: can't allocate memory`) unless the config asks for a small one."""

import pathlib
import resource
import sys

import tomllib
import torch
from safetensors.torch import save_file

config = tomllib.loads(pathlib.Path(sys.argv[1]).read_text())
# Room for what is mapped now plus 1 GiB; the big batch needs 8 GiB.
used = int(pathlib.Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (used + 2**30, resource.RLIM_INFINITY))
batch = torch.empty((int(config["batch_size"]), 2**20), dtype=torch.float32)  # batch_size MiB x 4
save_file({"w": batch[:1, :8].clone()}, str(pathlib.Path(config["output_dir"]) / "lora.safetensors"))
print(f"trained with batch {config['batch_size']}")
