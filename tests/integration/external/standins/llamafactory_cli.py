"""A stand-in for `llamafactory-cli train CONFIG.yaml` (LLaMA-Factory): YAML or JSON config in; in output_dir
the adapter, trainer_log.jsonl with LLaMA-Factory's fields, its own README.md, and all_results.json."""

import json
import pathlib
import sys

import numpy as np
import yaml
from safetensors.numpy import save_file


def main():
    command, path = sys.argv[1], pathlib.Path(sys.argv[2])
    assert command == "train", command
    config = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    if "lora_target" not in config:
        sys.exit("ValueError: lora_target is required")
    out = pathlib.Path(config["output_dir"])
    steps = int(config.get("max_steps", 3))
    with (out / "trainer_log.jsonl").open("w") as log:
        for step in range(1, steps + 1):
            log.write(json.dumps({"current_steps": step, "total_steps": steps, "loss": 2.0 - 0.1 * step,
                                  "lr": config.get("learning_rate", 1e-4), "epoch": step / steps,
                                  "percentage": 100 * step / steps}) + "\n")
    save_file({"base_model.model.q_proj.lora_A.weight": np.zeros((8, 8), np.float32)},
              str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16, "peft_type": "LORA"}))
    (out / "README.md").write_text("---\nlibrary_name: peft\n---\n# LLaMA-Factory's own model card\n")
    mean_loss = sum(2.0 - 0.1 * step for step in range(1, steps + 1)) / steps  # the Trainer's train_loss
    (out / "all_results.json").write_text(json.dumps({"epoch": 1.0, "eval_loss": 1.55, "train_loss": mean_loss,
                                                      "train_runtime": 0.1, "note": "text is left out"}))
    print(f"***** train metrics *****\n  train_loss = {mean_loss}\n  lora_target = {config['lora_target']}")


if __name__ == "__main__":
    main()
