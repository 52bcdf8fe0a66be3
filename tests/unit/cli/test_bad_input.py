"""Bad input, across every command: one line that names the file, line or key; the right exit code; never a
traceback; nothing left behind and nothing lost.

Each case runs in a folder of its own holding a good config, good data and a fake run; the folder is
snapshotted before and compared after, byte for byte.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from lorakit.cli.main import cli
from tests.conftest import ALPACA_ROWS

GOOD = "model: {name_or_path: MODEL}\ndata: {train: train.jsonl, max_length: 64}\ntrain: {max_steps: 1}\n"
ROWS = "".join(json.dumps(r) + "\n" for r in ALPACA_ROWS)
ZIP = b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(range(256))
RUN = "runs/fake-v001"  # a run folder with an adapter's files, enough for the commands that look one up
WS = 'work_dir = "work"\nconfig = "good.yaml"\n'
CMD = 'work_dir = "w"\n[trainer]\nkind = "command"\ncommand = "{command}"\nconfig = "{config}"\n'


@dataclass
class Case:
    id: str
    args: list[str]
    says: str  # in the one error line
    code: int = 1
    files: dict[str, str | bytes] = field(default_factory=dict)
    usage: bool = False  # click's own usage error (Usage: ... / Error: ...), not a lorakit one


CASES = [
    # -- config files, overlays and --set ---------------------------------------------------------------------
    Case("config missing", ["train", "nope.yaml"], "config file not found: nope.yaml", 2),
    Case("config suffix", ["train", "c.json"], "config file c.json must end in .yaml, .yml or .toml", 2,
         {"c.json": "{}"}),
    Case("config binary", ["train", "c.yaml"], "c.yaml: looks like a zip archive, not text", 2, {"c.yaml": ZIP}),
    Case("config utf-16", ["train", "c.yaml"], "c.yaml: looks like UTF-16: re-save it as UTF-8", 2,
         {"c.yaml": GOOD.encode("utf-16")}),
    Case("config utf-16 no bom", ["train", "c.yaml"], "c.yaml: looks like UTF-16: re-save it as UTF-8", 2,
         {"c.yaml": GOOD.encode("utf-16-le")}),
    Case("config latin-1", ["train", "c.yaml"], "c.yaml:2: not UTF-8 text", 2,
         {"c.yaml": b"output: {name: x}\nlora: {r: 8} # caf\xe9\n"}),
    Case("config yaml syntax", ["train", "c.yaml"], "invalid YAML at c.yaml:3", 2, {"c.yaml": "model:\n  - [\n"}),
    Case("config toml syntax", ["train", "c.toml"], "invalid TOML in c.toml", 2, {"c.toml": "[model\n"}),
    Case("config a list", ["train", "c.yaml"], "c.yaml must hold a mapping of sections (got list)", 2,
         {"c.yaml": "- a\n- b\n"}),
    Case("unknown key", ["train", "good.yaml", "--set", "lora.alpah=4"], "lora.alpah: unknown key, did you mean "
         "'alpha'?", 2),
    Case("unknown section", ["train", "c.yaml"], "lorra: unknown key, did you mean 'lora'? [c.yaml]", 2,
         {"c.yaml": GOOD + "lorra: {r: 4}\n"}),
    Case("wrong type", ["train", "good.yaml", "--set", "lora.r=abc"], "lora.r: Input should be a valid integer", 2),
    Case("out of range", ["train", "good.yaml", "--set", "lora.r=0"], "lora.r: Input should be greater than 0 "
         "(got 0) [--set lora.r=0]", 2),
    Case("--set without =", ["train", "good.yaml", "--set", "lora.r"], "--set needs KEY=VALUE", 2),
    Case("--set empty key", ["train", "good.yaml", "--set", "lora..r=1"], "--set needs KEY=VALUE", 2),
    Case("overlay missing", ["train", "good.yaml", "--add", "fast.yaml"], "config file not found: fast.yaml", 2),
    Case("overlay binary", ["train", "good.yaml", "--add", "fast.yaml"], "fast.yaml: looks like a binary file", 2,
         {"fast.yaml": b"\x00\x01\x02\x03" * 8}),
    Case("required key", ["train", "c.yaml"], "data: required key is missing", 2,
         {"c.yaml": "model: {name_or_path: MODEL}\n"}),
    Case("run name", ["train", "good.yaml", "--name", "a/b"], "run name must be a plain folder name", 2),
    Case("name placeholder", ["train", "good.yaml", "--set", "output.name={colour}"], "{colour}", 2),
    Case("template name", ["train", "good.yaml", "--set", "data.template=vicuna"], "unknown template 'vicuna'", 2),
    Case("eval and val_size", ["train", "good.yaml", "--set", "data.eval=train.jsonl", "--set", "data.val_size=0.1"],
         "data.eval and data.val_size are both set", 2),
    Case("two evaluation cadences", ["train", "good.yaml", "--set", "train.eval_every=5", "--set",
                                     "train.evals_per_epoch=2"],
         "train.eval_every and train.evals_per_epoch are both set; use one of them [train.eval_every from", 2),
    Case("oom overlay missing", ["train", "good.yaml", "--set", "train.oom.overlay=oom.yaml"], "oom.yaml", 2),
    Case("oom overlay batch", ["train", "good.yaml", "--set", "train.oom.overlay=oom.yaml"],
         "micro_batch_size x grad_accum goes from", 2, {"oom.yaml": "train: {micro_batch_size: 1}\n"}),
    Case("oom overlay key", ["train", "good.yaml", "--set", "train.oom.overlay=oom.yaml"],
         "lora.r cannot change during a run", 2, {"oom.yaml": "lora: {r: 2}\n"}),
    Case("early stopping without validation", ["train", "good.yaml", "--set", "train.early_stopping.patience=2"],
         "train.early_stopping needs validation data: set data.eval or data.val_size", 2),
    Case("early stopping metric not computed", ["train", "good.yaml", "--set", "data.val_size=0.2", "--set",
                                                "train.early_stopping.metric=exact"],
         "train.early_stopping.metric: exact is not computed: add it to train.eval_metrics", 2),
    # a value of the wrong kind keeps its key, even when it is a mapping
    Case("mapping for a number", ["train", "good.yaml", "--set", "train.lr={a: 1}"],
         "train.lr: Input should be a valid number (got {'a': 1})", 2),
    # a rule between keys: where each key it names was set, not the whole section it was checked on
    Case("neftune with dpo", ["train", "good.yaml", "--set", "train.method=dpo", "--set",
                              "train.neftune_noise_alpha=5"],
         "train.neftune_noise_alpha applies to supervised fine-tuning; unset it for train.method: dpo", 2),
    Case("keep best without evaluation", ["train", "good.yaml", "--set", "train.keep=best"],
         "train.keep: best needs validation data: set data.eval or data.val_size [train.keep from --set "
         "train.keep=best]", 2),
    Case("sample prompts missing", ["train", "good.yaml", "--set", "train.sample_prompts=prompts.txt"],
         "train.sample_prompts: file not found: prompts.txt", 2),
    Case("unknown eval metric", ["train", "good.yaml", "--set", "train.eval_metrics=[loss, bleu]"],
         "train.eval_metrics: Input should be 'loss', 'exact', 'chrf' or 'typst' (got 'bleu')", 2),
    Case("copy_files missing", ["train", "good.yaml", "--set", "tracking.copy_files=[prompts.txt]"],
         "tracking.copy_files: file not found: prompts.txt", 2),
    Case("memory budget", ["train", "good.yaml", "--set", "train.memory_budget=lots"], "not a memory size", 2),
    Case("resume unknown run", ["train", "--resume", "ghost"], "no run 'ghost'"),
    Case("resume with config", ["train", "good.yaml", "--resume", "fake"], "--resume continues a run with its own "
         "config", 2, usage=True),
    Case("no config", ["train"], "give a CONFIG file to train, or --resume RUN", 2, usage=True),
    Case("config show binary", ["config", "show", "c.toml"], "c.toml: looks like a gzip archive", 2,
         {"c.toml": b"\x1f\x8b\x08\x00" + bytes(64)}),
    # -- data --------------------------------------------------------------------------------------------------
    Case("data path typo", ["train", "good.yaml", "--set", "data.train=trian.jsonl"],
         "data.train: data file not found: trian.jsonl"),
    Case("eval path typo", ["train", "good.yaml", "--set", "data.eval=dev.jsonl"],
         "data.eval: data file not found: dev.jsonl"),
    Case("data utf-16", ["train", "good.yaml", "--set", "data.train=d.jsonl"], "d.jsonl: looks like UTF-16", 1,
         {"d.jsonl": ROWS.encode("utf-16")}),
    Case("data binary", ["train", "good.yaml", "--set", "data.train=d.jsonl"], "d.jsonl: looks like a zip archive",
         1, {"d.jsonl": ZIP}),
    Case("data latin-1", ["train", "good.yaml", "--set", "data.train=d.jsonl"], "d.jsonl:3: not UTF-8 text", 1,
         {"d.jsonl": ROWS.split("\n", 2)[0].encode() + b"\n" + ROWS.split("\n", 2)[1].encode() +
          b'\n{"instruction": "caf\xe9", "output": "x"}\n'}),
    Case("data malformed json", ["train", "good.yaml", "--set", "data.train=d.jsonl"], "d.jsonl:2: malformed JSON",
         1, {"d.jsonl": ROWS.splitlines()[0] + "\n{oops\n"}),
    Case("data not an object", ["train", "good.yaml", "--set", "data.train=d.jsonl"],
         "d.jsonl:1: expected a JSON object (got list)", 1, {"d.jsonl": "[1, 2]\n"}),
    Case("data unknown format", ["train", "good.yaml", "--set", "data.train=d.jsonl"],
         "d.jsonl:1: cannot tell the format", 1, {"d.jsonl": '{"question": "a", "reply": "b"}\n'}),
    Case("data suffix", ["train", "good.yaml", "--set", "data.train=d.xlsx"], "unsupported data file d.xlsx", 1,
         {"d.xlsx": b"PK"}),
    Case("data json not a list", ["train", "good.yaml", "--set", "data.train=d.json"],
         "d.json: a .json data file must hold a list of objects (got dict)", 1, {"d.json": '{"a": 1}'}),
    Case("data empty", ["train", "good.yaml", "--set", "data.train=d.jsonl"], "the dataset is empty", 1,
         {"d.jsonl": "\n\n"}),
    Case("data csv utf-16", ["train", "good.yaml", "--set", "data.train=d.csv"], "d.csv: looks like UTF-16", 1,
         {"d.csv": "instruction,output\na,b\n".encode("utf-16")}),
    Case("data preference pairs", ["train", "good.yaml", "--set", "data.train=d.jsonl"],
         "d.jsonl: rows are preference pairs (chosen/rejected): set train.method: dpo to train on the pairs, or "
         "data.use: chosen to train the chosen answers as supervised data", 1,
         {"d.jsonl": '{"prompt": "q", "chosen": "a", "rejected": "b"}\n' * 3}),
    Case("dpo on sft rows", ["train", "good.yaml", "--set", "train.method=dpo", "--set", "data.train=d.jsonl"],
         "d.jsonl: rows are not preference pairs", 1, {"d.jsonl": '{"instruction": "q", "output": "a"}\n' * 3}),
    Case("data kto label", ["train", "good.yaml", "--set", "data.train=d.jsonl"], "set data.label_field: label", 1,
         {"d.jsonl": '{"prompt": "q", "completion": "a", "label": false}\n' * 3}),
    Case("data images", ["train", "good.yaml", "--set", "data.train=d.jsonl"], "d.jsonl: rows have 'images'", 1,
         {"d.jsonl": '{"messages": [{"role": "user", "content": "<image>x"}, {"role": "assistant", "content": "y"}], '
                     '"images": ["a.png"]}\n'}),
    Case("data label not bool", ["train", "good.yaml", "--set", "data.train=d.jsonl", "--set", "data.label_field=ok"],
         "d.jsonl:1: data.label_field: 'ok' must be true or false in every row (got 'maybe')", 1,
         {"d.jsonl": '{"prompt": "q", "completion": "a", "ok": "maybe"}\n'}),
    Case("data function_call not json", ["train", "good.yaml", "--set", "data.train=d.jsonl"],
         "d.jsonl:1: conversations[1].value: a function_call turn must hold JSON", 1,
         {"d.jsonl": '{"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "oops"}, '
                     '{"from": "gpt", "value": "a"}]}\n'}),
    Case("registry without names", ["train", "good.yaml", "--set", "data.train=dataset_info.json"],
         "data.train: dataset_info.json is a LLaMA-Factory dataset registry: name the datasets to use", 1,
         {"dataset_info.json": '{"a": {"file_name": "train.jsonl"}}'}),
    Case("registry unknown name", ["train", "good.yaml", "--set", "data.train=dataset_info.json#b"],
         "no dataset named 'b' in the registry", 1, {"dataset_info.json": '{"a": {"file_name": "train.jsonl"}}'}),
    Case("registry hub dataset", ["train", "good.yaml", "--set", "data.train=dataset_info.json#a"],
         "the dataset is not a local file (hf_hub_url: x/y)", 1, {"dataset_info.json": '{"a": {"hf_hub_url": "x/y"}}'}),
    Case("stride too long", ["train", "good.yaml", "--set", "data.on_overflow=split", "--set", "data.stride=64"],
         "data.stride (64) must be below data.max_length (64)", 2),
    Case("flat llamafactory config", ["train", "lf.yaml"], "lf.yaml: this looks like a LLaMA-Factory config", 2,
         {"lf.yaml": "model_name_or_path: m\nstage: sft\nfinetuning_type: lora\ndataset: a\n"}),
    Case("import unknown trainer", ["config", "import", "good.yaml"],
         "good.yaml: cannot tell which trainer wrote it; give --from llamafactory or --from axolotl", 2),
    Case("data parquet broken", ["train", "good.yaml", "--set", "data.train=d.parquet"], "d.parquet: cannot read "
         "parquet", 1, {"d.parquet": b"PAR1 not really"}),
    Case("data role", ["train", "good.yaml", "--set", "data.train=d.jsonl"], "d.jsonl:1:", 1,
         {"d.jsonl": '{"messages": [{"role": "narrator", "content": "x"}, {"role": "assistant", "content": "y"}]}\n'}),
    Case("data output type", ["train", "good.yaml", "--set", "data.train=d.jsonl"], "d.jsonl:1:", 1,
         {"d.jsonl": '{"instruction": "a", "output": 3}\n'}),
    Case("data val_size", ["train", "good.yaml", "--set", "data.val_size=500"], "leaves no training rows"),
    Case("data check missing", ["data", "check", "nope.jsonl"], "data file not found: nope.jsonl"),
    Case("data check utf-16", ["data", "check", "d.jsonl"], "d.jsonl: looks like UTF-16", 1,
         {"d.jsonl": ROWS.encode("utf-16")}),
    # -- the base model and adapters -----------------------------------------------------------------------------
    Case("model typo", ["train", "good.yaml", "--set", "model.name_or_path=./modle"],
         "model.name_or_path: no such model folder or file (got './modle')"),
    Case("model folder", ["train", "good.yaml", "--set", "model.name_or_path=empty"],
         "is a folder without config.json", 1, {"empty/notes.txt": "x"}),
    Case("model gguf", ["train", "good.yaml", "--set", "model.name_or_path=m.gguf"], "GGUF file not found"),
    Case("nf4 on cpu", ["train", "good.yaml", "--set", "model.quantization=nf4"], "needs a CUDA GPU"),
    Case("init_from missing", ["train", "good.yaml", "--set", "lora.init_from=runs/old-v001"],
         "lora.init_from: no adapter_config.json in runs/old-v001"),
    Case("init_from not json", ["train", "good.yaml", "--set", "lora.init_from=old"],
         "lora.init_from: old/adapter_config.json is not readable as JSON", 1, {"old/adapter_config.json": "{r: 8"}),
    Case("init_from a list", ["train", "good.yaml", "--set", "lora.init_from=old"],
         "lora.init_from: old/adapter_config.json holds a list, not a PEFT adapter config", 1,
         {"old/adapter_config.json": "[8]"}),
    Case("init_from manifest broken", ["train", "good.yaml", "--set", "lora.init_from=old"],
         "lora.init_from: old/manifest.json is not readable as JSON", 1,
         {"old/adapter_config.json": '{"r": 16, "lora_alpha": 32}', "old/manifest.json": "{broken"}),
    Case("init_from shape", ["train", "good.yaml", "--set", f"lora.init_from={RUN}", "--set", "lora.r=4"],
         "has a different shape: r 16 there, lora.r 4 here"),
    # -- runs, infer, eval, export ------------------------------------------------------------------------------
    Case("runs show", ["runs", "show", "ghost"], "no run 'ghost'"),
    Case("runs diff", ["runs", "diff", "fake", "ghost"], "no run 'ghost'"),
    Case("runs lineage", ["runs", "lineage", "ghost"], "no run 'ghost'"),
    Case("runs note", ["runs", "note", "ghost", "text"], "no run 'ghost'"),
    Case("runs show broken manifest", ["runs", "show", "runs/broken-v001"], "manifest.json: unreadable", 1,
         {"runs/broken-v001/manifest.json": "{"}),
    Case("infer run", ["infer", "ghost", "--input", "in.txt"], "ghost", 1, {"in.txt": "x"}),
    # a PEFT folder from elsewhere: its JSON files are read, never trusted to be what they say
    Case("infer adapter config a list", ["infer", "peft", "--input", "in.txt"],
         "peft/adapter_config.json: holds a list, not a PEFT adapter config", 1,
         {"in.txt": "x", "peft/adapter_config.json": "[8]"}),
    Case("infer manifest broken", ["infer", "peft", "--input", "in.txt"], "peft/manifest.json: unreadable", 1,
         {"in.txt": "x", "peft/adapter_config.json": "{}", "peft/manifest.json": "{oops"}),
    Case("infer manifest of something else", ["infer", "peft", "--input", "in.txt"],
         "peft/manifest.json: records no model and data config", 1,
         {"in.txt": "x", "peft/adapter_config.json": "{}", "peft/manifest.json": '{"name": "x"}'}),
    Case("infer input missing", ["infer", "fake", "--input", "in.txt"], "--input: file not found: in.txt"),
    Case("infer input binary", ["infer", "fake", "--input", "in.tex"], "in.tex: looks like a PDF document", 1,
         {"in.tex": b"%PDF-1.7\n" + bytes(range(256))}),
    Case("infer input utf-16", ["infer", "fake", "--input", "in.jsonl"], "in.jsonl: looks like UTF-16", 1,
         {"in.jsonl": '{"input": "x"}\n'.encode("utf-16")}),
    Case("infer input empty", ["infer", "fake", "--input", "in.txt"], "in.txt: the input is empty", 1,
         {"in.txt": "\n"}),
    Case("infer input jsonl line", ["infer", "fake", "--input", "in.jsonl"], "in.jsonl:2: not JSON", 1,
         {"in.jsonl": '{"input": "x"}\n{nope\n'}),
    Case("infer input a folder", ["infer", "fake", "--input", "notes"], "--input notes is a folder; give a file in it",
         1, {"notes/a.txt": "x"}),
    # a folder is never replaced by a file, --force or not, and it is said before any answer is generated
    Case("infer output a folder", ["infer", "fake", "--input", "in.txt", "--output", "out", "--force"],
         "--output out is a folder", 1, {"in.txt": "x", "out/keep.txt": "someone's"}),
    Case("infer no new tokens", ["infer", "fake", "--input", "in.txt", "--max-new-tokens", "0"],
         "'--max-new-tokens': 0 is not in the range x>=1", 2, {"in.txt": "x"}, usage=True),
    Case("infer negative temperature", ["infer", "fake", "--input", "in.txt", "--temperature", "-1"],
         "'--temperature': -1.0 is not in the range x>=0", 2, {"in.txt": "x"}, usage=True),
    # zero cases would be recorded as the run's evaluation on that file, over the one it had
    Case("eval limit 0", ["eval", "fake", "--data", "train.jsonl", "--limit", "0"],
         "'--limit': 0 is not in the range x>=1", 2, usage=True),
    Case("eval data missing", ["eval", "fake", "--data", "dev.jsonl"], "--data: file not found: dev.jsonl"),
    Case("eval metric", ["eval", "fake", "--data", "train.jsonl", "--metrics", "bleu"], "--metrics: unknown bleu"),
    Case("export run", ["export", "ghost", "--merge", "--out", "merged"], "no run 'ghost'"),
    Case("export onto a file", ["export", "fake", "--merge", "--out", "merged"], "--out merged is a file", 1,
         {"merged": "someone's file"}),
    Case("export into a full folder", ["export", "fake", "--merge", "--out", "merged"],
         "--out merged exists and is not empty", 1, {"merged/keep.txt": "x"}),
    # -- queue workspaces ---------------------------------------------------------------------------------------
    Case("workspace missing", ["queue", "ws.toml"], "config file not found: ws.toml", 2),
    Case("workspace binary", ["queue", "ws.toml"], "ws.toml: looks like a zip archive", 2, {"ws.toml": ZIP}),
    Case("workspace syntax", ["queue", "ws.toml"], "invalid TOML in ws.toml", 2, {"ws.toml": "work_dir = \n"}),
    Case("workspace unknown key", ["queue", "ws.toml"], "invalid workspace ws.toml: wrok_dir: unknown key", 2,
         {"ws.toml": WS + "wrok_dir = 'w'\n"}),
    Case("workspace no work_dir", ["queue", "ws.toml"], "work_dir: Field required", 2,
         {"ws.toml": 'config = "good.yaml"\n'}),
    Case("workspace clean-up", ["queue", "ws.toml"], "cleanup.remote_training = true needs remote.output", 2,
         {"ws.toml": WS + "[cleanup]\nremote_training = true\n"}),
    Case("workspace command", ["queue", "ws.toml"], "trainer: trainer.kind = command needs trainer.command", 2,
         {"ws.toml": 'work_dir = "work"\n[trainer]\nkind = "command"\n'}),
    Case("workspace slurm command", ["queue", "ws.toml"], "queue.executor = slurm submits lorakit training runs",
         2, {"ws.toml": 'work_dir = "w"\n[trainer]\nkind = "command"\ncommand = "x"\nconfig = "t.toml"\n'
                        '[queue]\nexecutor = "slurm"\n'}),
    Case("workspace ray without remote", ["queue", "ws.toml"], "queue.executor = ray trains on other machines: it "
         "needs remote.training", 2, {"ws.toml": WS + '[queue]\nexecutor = "ray"\n'}),
    Case("workspace ray memory", ["queue", "ws.toml"], "queue.ray.memory", 2,
         {"ws.toml": WS + '[queue]\nexecutor = "ray"\n[queue.ray]\nmemory = "lots"\n'}),
    Case("sweep ray resources", ["train", "good.yaml", "--set", "launch.ray.num_gpus=-1"], "launch.ray.num_gpus", 2),
    Case("workspace base config", ["queue", "ws.toml"], "config: file not found:", 2,
         {"ws.toml": 'work_dir = "work"\nconfig = "base.yaml"\n'}),
    Case("workspace overlay", ["queue", "ws.toml"], "overlays: file not found:", 2,
         {"ws.toml": WS + 'overlays = ["low.yaml"]\n'}),
    Case("queue --add", ["queue", "ws.toml", "--add", "low.yaml"], "--add: file not found: low.yaml", 2,
         {"ws.toml": WS}),
    Case("workspace rclone config", ["queue", "ws.toml"], "remote.config: rclone config file not found:", 2,
         {"ws.toml": WS + '[remote]\nconfig = "rclone.conf"\n'}),
    Case("workspace trainer template", ["queue", "ws.toml"], "invalid TOML in", 2,
         {"ws.toml": 'work_dir = "w"\n[trainer]\nkind = "command"\ncommand = "x"\nconfig = "t.toml"\n',
          "t.toml": "a = [\n"}),
    Case("workspace repos", ["queue", "ws.toml"], "trainer.repos.sd_scripts: no such folder:", 2,
         {"ws.toml": 'work_dir = "w"\n[trainer]\nkind = "command"\ncommand = "x"\nconfig = "t.toml"\n'
                     '[trainer.repos]\nsd_scripts = "sd-scripts"\n', "t.toml": "a = 1\n"}),
    Case("workspace outputs", ["queue", "ws.toml"], "trainer.outputs: List should have at least 1 item", 2,
         {"ws.toml": 'work_dir = "w"\n[trainer]\nkind = "command"\ncommand = "x"\nconfig = "t.toml"\noutputs = []\n',
          "t.toml": "a = 1\n"}),
    Case("trainer relative command", ["queue", "ws.toml"], "trainer.command: cannot run it: ", 1,
         {"ws.toml": CMD.format(command="scripts/trian.sh {config}", config="t.toml"), "t.toml": "a = 1\n"}),
    Case("trainer not executable", ["queue", "ws.toml"], "train.sh is not executable (chmod +x, or put its "
         "interpreter first", 1, {"ws.toml": CMD.format(command="scripts/train.sh {config}", config="t.toml"),
                                  "t.toml": "a = 1\n", "scripts/train.sh": "#!/bin/sh\n"}),
    Case("trainer missing program", ["queue", "ws.toml"], "trainer.command: cannot run it: /opt/nowhere/train does "
         "not exist", 1, {"ws.toml": CMD.format(command="/opt/nowhere/train {config}", config="t.toml"),
                          "t.toml": "a = 1\n"}),
    Case("trainer placeholder", ["queue", "ws.toml"], "trainer.command: unknown placeholder {confg}", 2,
         {"ws.toml": CMD.format(command="{python} train.py {confg}", config="t.toml"), "t.toml": "a = 1\n"}),
    # -- lorakit run: external trainers ------------------------------------------------------------------------
    Case("trainer file unknown key", ["run", "t.toml"], "comand: unknown key, did you mean 'command'?", 2,
         {"t.toml": 'comand = "x"\n'}),
    Case("trainer file no command", ["run", "t.toml"], "trainer.kind = command needs trainer.command", 2,
         {"t.toml": 'config = "sd.toml"\n'}),
    Case("trainer file syntax", ["run", "t.toml"], "invalid TOML in t.toml", 2, {"t.toml": "command = \n"}),
    Case("trainer template syntax", ["run", "t.toml"], "invalid TOML in", 2,
         {"t.toml": 'command = "{python} x.py {config}"\nconfig = "sd.toml"\n', "sd.toml": "[general\n"}),
    Case("trainer template json", ["run", "t.toml"], "malformed JSON", 2,
         {"t.toml": 'command = "{python} x.py {config}"\nconfig = "sd.json"\n', "sd.json": '{"a": }'}),
    Case("trainer template suffix", ["run", "t.toml"], "must end in .toml, .yaml, .yml or .json", 2,
         {"t.toml": 'command = "{python} x.py {config}"\nconfig = "sd.ini"\n', "sd.ini": "a=1\n"}),
    Case("trainer file placeholder", ["run", "t.toml"], "trainer.command: unknown placeholder {confg}", 2,
         {"t.toml": 'command = "{python} x.py --config_file {confg}"\n'}),
    Case("trainer oom overlay missing", ["run", "t.toml"], "trainer.oom_overlays[0]: file not found:", 2,
         {"t.toml": 'command = "{python} x.py"\noom_overlays = ["outofmemory.toml"]\n'}),
    Case("trainer copy file missing", ["run", "t.toml"], "trainer.copy_files[0]: file not found:", 2,
         {"t.toml": 'command = "{python} x.py"\ncopy_files = ["sample-prompts.txt"]\n'}),
    Case("trainer repo missing", ["run", "t.toml"], "trainer.repos.sd_scripts: no such folder:", 2,
         {"t.toml": 'command = "{python} {sd_scripts}/x.py"\n[repos]\nsd_scripts = "~/nowhere-sd-scripts"\n'}),
    Case("trainer dataset not a folder", ["run", "t.toml", "--dataset", "cats.zip"], "--dataset: not a folder: "
         "cats.zip", 2, {"t.toml": 'command = "{python} x.py"\n', "cats.zip": b"PK"}),
    Case("trainer --add missing", ["run", "t.toml", "--add", "low.toml"], "config file not found:", 2,
         {"t.toml": 'command = "{python} x.py {config}"\nconfig = "sd.toml"\n', "sd.toml": "a = 1\n"}),
    Case("trainer --set without a config", ["run", "t.toml", "--set", "a=1"], "this trainer has none", 2,
         {"t.toml": 'command = "{python} x.py"\n'}),
    Case("trainer steps key", ["run", "t.toml"], "trainer.steps_key: max_train_steps is not a whole number", 2,
         {"t.toml": 'command = "{python} x.py {config}"\nconfig = "sd.toml"\nsteps_key = "max_train_steps"\n',
          "sd.toml": "epochs = 1\n"}),
    Case("trainer name placeholder", ["run", "t.toml"], "trainer.name: 'cats-{colour}' is not a plain folder name",
         2, {"t.toml": 'command = "{python} x.py"\nname = "cats-{colour}"\n'}),
    Case("run name with a slash", ["run", "--name", "a/b", "--", "python", "x.py"], "is not a plain folder name", 2),
    Case("run nothing", ["run"], "give a TRAINER_FILE, or -- and the command to run", 2, usage=True),
    Case("run command without name", ["run", "--", "python", "x.py"], "a command line needs --name NAME", 2,
         usage=True),
    Case("run --repo", ["run", "--name", "x", "--repo", "sd", "--", "python", "x.py"], "--repo needs NAME=PATH", 2),
    Case("run program missing", ["run", "--name", "x", "--", "./train.sh"], "train.sh does not exist"),
    # -- Slurm ---------------------------------------------------------------------------------------------------
    Case("submit nodes", ["submit", "good.yaml", "--nodes", "0", "--dry-run"], "Invalid value for '--nodes'", 2,
         usage=True),
    Case("submit quote", ["submit", "good.yaml", "--partition", 'gpu"x', "--dry-run"],
         "holds a double quote or a line break"),
    Case("submit line break", ["submit", "good.yaml", "--time", "1:00\n#SBATCH --mem=1T", "--dry-run"],
         "holds a double quote or a line break"),
    Case("submit data typo", ["submit", "good.yaml", "--set", "data.train=trian.jsonl"],
         "data.train: data file not found: trian.jsonl"),
    Case("submit config", ["submit", "nope.yaml", "--dry-run"], "config file not found: nope.yaml", 2),
    Case("status", ["status", "ghost"], "no run 'ghost'"),
    Case("logs", ["logs", "ghost"], "no run 'ghost'"),
    Case("cancel", ["cancel", "ghost"], "no run 'ghost'"),
    Case("cancel a run never submitted", ["cancel", "fake"], "fake-v001"),
]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def case_dir(tmp_path, tiny_model_dir, monkeypatch):
    folder = tmp_path / "case"
    folder.mkdir()
    (folder / "good.yaml").write_text(GOOD.replace("MODEL", str(tiny_model_dir)))
    (folder / "train.jsonl").write_text(ROWS)
    run = folder / RUN
    run.mkdir(parents=True)
    (run / "adapter_config.json").write_text(json.dumps({"r": 16, "lora_alpha": 32, "peft_type": "LORA",
                                                         "base_model_name_or_path": str(tiny_model_dir)}))
    (run / "adapter_model.safetensors").write_bytes(b"not read by these cases")
    (run / "manifest.json").write_text(json.dumps({"run_id": "0" * 32, "name": "fake-v001", "status": "completed",
                                                   "status_history": [{"status": "completed", "at": "2026-11-01"}],
                                                   "config": {}, "metrics": {}}))
    monkeypatch.chdir(folder)
    return folder


def test_the_corpus_covers_every_kind_of_input():
    kinds = {c.args[0] for c in CASES}
    assert len(CASES) >= 60 and {"train", "data", "runs", "infer", "eval", "export", "queue", "submit"} <= kinds


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_leaves_nothing_behind(case, case_dir, tiny_model_dir):
    for name, content in case.files.items():
        path = case_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content.replace("MODEL", str(tiny_model_dir)))
        else:
            path.write_bytes(content)
    before = snapshot(case_dir)

    result = CliRunner().invoke(cli, case.args)

    assert result.exit_code == case.code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    # click's usage errors: "Usage: ...", "Try ...", then one "Error: ..." line; lorakit's: that line alone
    errors = [line for line in lines if line.startswith("Error:")] if case.usage else lines
    assert len(errors) == 1, result.output
    assert errors[0].lower().startswith("error:") and case.says in errors[0], errors[0]
    assert snapshot(case_dir) == before  # nothing made, nothing changed, nothing lost
