"""README.md in the run folder: a model card a person can act on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lorakit.runs.provenance import redact_text


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def write_card(run_dir: Path, manifest: dict[str, Any]) -> None:
    (run_dir / "README.md").write_text(redact_text(render_card(run_dir, manifest)), encoding="utf-8")


def refresh_card(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Rewrite the model card after the manifest changed (a note, an evaluation), if the run has one."""
    if (run_dir / "README.md").is_file():
        write_card(run_dir, manifest)


def render_card(run_dir: Path, manifest: dict[str, Any]) -> str:
    """Markdown: what was trained on what, with which settings, how well, and how to load it."""
    config = manifest["config"]
    base = manifest["base_model"]
    metrics = manifest.get("metrics", {})
    data_lines = "\n".join(f"- `{path}` (sha256 `{digest[:12]}`)" for path, digest in manifest["data_files"].items())
    metric_lines = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in metrics.items()) or "| (none) | |"
    lora, train, data = config["lora"], config["train"], config["data"]
    parent = manifest.get("parent")
    parent_line = (f"\nContinued from `{parent['name']}` (`{parent['path']}`); `lorakit runs lineage {run_dir.name}` "
                   "shows the whole chain.\n" if parent else "")
    notes = "".join(f"\n- {n['at']}: {n['text']}" for n in manifest.get("notes", []))
    notes_section = f"\n## Notes{notes}\n" if notes else ""
    eval_section = "".join(_evaluation(e) for e in manifest.get("evaluations", []))
    return f"""# {run_dir.name}

A LoRA adapter for **{base.get('name')}**, trained with lorakit {manifest['versions'].get('lorakit', '?')}.
Status: **{manifest['status']}**.
{parent_line}
## Data
{data_lines}

Format detected: {", ".join(sorted(set(manifest.get('data_formats', {}).values()))) or "?"};
chat template: {manifest.get('template', '?')}; max length {data['max_length']} tokens; packing {data['packing']}.

## Settings
| setting | value |
|---|---|
| rank / alpha / dropout | {lora['r']} / {lora['alpha']} / {lora['dropout']} |
| target modules | {lora['target_modules']} |
| epochs / steps | {train['epochs']} / {manifest.get('total_steps', '?')} |
| effective batch | {train['micro_batch_size']} x {train['grad_accum']} |
| learning rate | {train['lr']} ({train['scheduler']}, warm-up {train['warmup_ratio']}) |

Config sha256: `{manifest['config_sha256']}` (full config in `config.resolved.yaml`).

## Results
| metric | value |
|---|---|
{metric_lines}

![loss](training_loss.png)
{eval_section}{notes_section}
## Use it
With PEFT (the adapter is in plain PEFT format):
```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained("{manifest['base_model_path']}")
model = PeftModel.from_pretrained(base, "{run_dir}")
tokenizer = AutoTokenizer.from_pretrained("{run_dir}")
```
"""


def _evaluation(entry: dict[str, Any]) -> str:
    """A table of one `lorakit eval`: the adapter, and the base model when it was evaluated too."""
    results = entry["results"]
    names = sorted({k for r in results.values() for k in r})
    header = "| model | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"
    rows = "".join(f"| {model} | " + " | ".join(_fmt(r.get(n, "-")) for n in names) + " |\n"
                   for model, r in results.items())
    return f"\n## Evaluation on `{entry['data']}` ({entry['at']})\n{header}{rows}"
