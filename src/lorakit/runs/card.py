"""README.md in the run folder: a model card a person can act on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lorakit.redaction import redact_text
from lorakit.runs.manifest import outcome_of


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def card_name(manifest: dict[str, Any]) -> str:
    """README.md, or CARD.md when an external trainer wrote a README.md of its own (never written over)."""
    return str(manifest.get("card") or "README.md")


def write_card(run_dir: Path, manifest: dict[str, Any]) -> None:
    render = render_external_card if manifest.get("trainer") == "command" else render_card
    (run_dir / card_name(manifest)).write_text(redact_text(render(run_dir, manifest)), encoding="utf-8")


def refresh_card(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Rewrite the model card after the manifest changed (a note, an evaluation), if the run has one."""
    if (run_dir / card_name(manifest)).is_file():
        write_card(run_dir, manifest)


def _note(kept: dict[str, Any]) -> str:
    return f": {kept['note']}" if kept.get("note") else ""


def _notes(manifest: dict[str, Any]) -> str:
    notes = "".join(f"\n- {n['at']}: {n['text']}" for n in manifest.get("notes", []))
    return f"\n## Notes{notes}\n" if notes else ""


def render_external_card(run_dir: Path, manifest: dict[str, Any]) -> str:
    """Markdown for an external trainer's run: the command, the trainer's software, data, outputs, samples."""
    python = manifest.get("trainer_python") or {}
    versions = ", ".join(f"{k} {v}" for k, v in (python.get("packages") or {}).items()) or python.get("error", "?")
    code = "".join(f"\n- {name}: `{state.get('commit', state.get('error', '?'))[:12]}`"
                   f"{' (dirty)' if state.get('dirty') else ''} {state.get('path', '')}"
                   for name, state in (manifest.get("code") or {}).items() if name not in ("lorakit", "workdir"))
    dataset = manifest.get("dataset")
    data = (f"`{dataset['path']}`: {dataset['files']} files, {dataset['bytes']:,} bytes, sha256 "
            f"`{dataset['sha256'][:12]}` (every file in `{dataset['list']}`)" if dataset else "(no --dataset)")
    outputs = "".join(f"| `{o['path']}` | {o['bytes']:,} | `{o['sha256'][:12]}` |\n"
                      for o in manifest.get("outputs", [])) or "| (none) | | |\n"
    meta_lines = "".join(f"\n\n**{name}**: " + ", ".join(f"{k}={v}" for k, v in list(meta.items())[:12])
                         for name, meta in (manifest.get("model_metadata") or {}).items())
    attempts = "".join(f"\n- attempt {a['attempt']}: {a['change']}, exit {a['returncode']}"
                       f"{', ' + a['error'] if a.get('error') else ''}" for a in manifest.get("attempts", []))
    curve = "\n![loss](training_loss.png)\n" if (run_dir / "training_loss.png").is_file() else ""
    samples = "".join(f"\n![{Path(s).name}]({s})" for s in manifest.get("samples", []))
    last = outcome_of(manifest)
    return f"""# {run_dir.name}

Trained by an external command with lorakit tracking it. Status: **{manifest['status']}**{
f" ({last.reason})" if last.reason else ""}.

```
{" ".join(manifest.get("command") or [])}
```

## The trainer
Python: `{python.get('executable', '?')}` {python.get('version', '')}{
f" (conda env {python['conda_env']})" if python.get("conda_env") else " (virtualenv)" if python.get("virtualenv")
else ""}; {versions}.{code}

Config sha256 `{str(manifest.get('config_sha256', '-'))[:12]}`; attempts:{attempts or " none"}

## Data
{data}

## Outputs
| file | bytes | sha256 |
|---|---|---|
{outputs}{meta_lines}
{curve}{samples}
{_notes(manifest)}"""


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
    notes_section = _notes(manifest)
    kept = manifest.get("adapter") or {}
    best_name = str(metrics.get("best_metric", "?")).removeprefix("eval_")
    last_note = "; the last one is in `last/`" if kept.get("last") else ""
    best_line = (f"\nThe adapter here is the **best** one, from step {kept['step']} by {best_name} "
                 f"({_fmt(metrics.get('best_value'))}){last_note}{_note(kept)}.\n" if kept.get("top") == "best" else
                 f"\nThe adapter here is the **last** one, from step {kept['step']}: {kept['note']}.\n"
                 if kept.get("note") else "")
    samples_section = _samples(run_dir, metrics.get("best_step"))
    eval_section = "".join(_evaluation(e) for e in manifest.get("evaluations", []))
    method = (f"preference pairs (**DPO**, {config['dpo']['loss']} loss, beta {config['dpo']['beta']})"
              if train.get("method") == "dpo" else "supervised fine-tuning")
    return f"""# {run_dir.name}

A LoRA adapter for **{base.get('name')}**, trained with lorakit {manifest['versions'].get('lorakit', '?')} by {method}.
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
{best_line}{samples_section}{eval_section}{notes_section}
## Use it
With PEFT (the adapter is in plain PEFT format):
```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

{base_loading(manifest)}
model = PeftModel.from_pretrained(base, "{run_dir.name}")  # this folder
tokenizer = AutoTokenizer.from_pretrained("{run_dir.name}")
```
Or with lorakit: `lorakit infer {run_dir.name} --input FILE`;
for llama.cpp and Ollama: `lorakit export {run_dir.name} --gguf`.
"""


def _samples(run_dir: Path, best_step: int | None) -> str:
    """First, best and last answers to the sample prompts (samples/step-N.jsonl), side by side."""
    import json

    files = sorted((run_dir / "samples").glob("step-*.jsonl"))
    if not files:
        return ""
    by_step = {int(f.stem.removeprefix("step-")): f for f in files}
    picks = {"first": min(by_step), "last": max(by_step)}
    if best_step is not None and best_step in by_step:
        picks = {"first": picks["first"], "best": best_step, "last": picks["last"]}
    rows = {name: [json.loads(line) for line in by_step[step].read_text(encoding="utf-8").splitlines()]
            for name, step in picks.items()}
    header = "| prompt | " + " | ".join(f"{name} (step {picks[name]})" for name in picks) + " |\n"
    header += "|---|" + "---|" * len(picks) + "\n"
    cell = lambda text: str(text).replace("|", "\\|").replace("\n", " ")[:200]  # noqa: E731
    body = "".join("| " + cell(first["prompt"]) + " | " + " | ".join(cell(rows[n][i]["output"]) for n in picks)
                   + " |\n" for i, first in enumerate(rows["first"]))
    return f"\n## Samples\n{header}{body}"


def _evaluation(entry: dict[str, Any]) -> str:
    """A table of one `lorakit eval`: the adapter, and the base model when it was evaluated too."""
    results = entry["results"]
    names = sorted({k for r in results.values() for k in r})
    header = "| model | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"
    rows = "".join(f"| {model} | " + " | ".join(_fmt(r.get(n, "-")) for n in names) + " |\n"
                   for model, r in results.items())
    cases = f", the first {entry['limit']} of its cases" if entry.get("limit") else ""
    return f"\n## Evaluation on `{entry['data']}`{cases} ({entry['at']})\n{header}{rows}"


def base_loading(manifest: dict[str, Any]) -> str:
    """The line that loads the base model on any machine: the built-in name, or the hub id at its revision,
    never the converted copy in this machine's cache."""
    identity = manifest.get("base_model", {})
    name = str(identity.get("name") or manifest["config"]["model"]["name_or_path"])
    from lorakit.model.resolve import BUILTIN_MODELS

    if name in BUILTIN_MODELS:
        return (f"from lorakit.model.resolve import resolve_model  # {name} is built into lorakit\n"
                f"base = AutoModelForCausalLM.from_pretrained(resolve_model({name!r}).path)")
    if identity.get("source") == "gguf":
        return (f"# the base came as the GGUF file {name} (sha256 {str(identity.get('sha256', '?'))[:12]})\n"
                f"base = AutoModelForCausalLM.from_pretrained(\"FOLDER_WITH_IT\", gguf_file={name!r})")
    revision = identity.get("revision")
    at = f", revision={revision!r}" if revision else ""
    return f"base = AutoModelForCausalLM.from_pretrained({name!r}{at})"
