"""Load a run (or any PEFT adapter folder) on its base model, with the prompt wrapping it was trained with."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorakit.config.schema import DataSection, ModelSection
from lorakit.data.prompt_shape import PromptShape
from lorakit.data.tokenize import Encoder
from lorakit.errors import ModelError, RunError

log = logging.getLogger(__name__)

PROMPTING_FILE = "lorakit.json"  # in a merged model folder: the run it came from and how it wrapped its prompts


@dataclass
class LoadedAdapter:
    name: str
    path: Path  # the run or adapter folder
    model: Any  # PeftModel, in eval mode
    tokenizer: Any
    encoder: Encoder
    shape: PromptShape
    max_length: int  # the context the run trained with
    device: Any
    manifest: dict[str, Any] | None
    base: Any = None  # the ResolvedModel the adapter sits on (None inside a training run)
    weights: tuple[Path, ...] = ()  # the files whose bytes are the adapter (or the whole model, merged or GGUF)

    @property
    def stop_ids(self) -> list[int]:
        """End of sequence, and the end-of-turn token of the chat dialect, when the vocabulary has one."""
        vocab = self.tokenizer.get_vocab()
        ids = {self.tokenizer.eos_token_id, *(vocab[t] for t in ("<end_of_turn>", "<|im_end|>", "<|eot_id|>")
                                              if t in vocab)}
        return sorted(i for i in ids if i is not None)


def pick_device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda: no CUDA device here; use --device cpu (or auto)")
    return torch.device(name)


def is_merged_folder(path: Path) -> bool:
    """A whole model in a folder (``export --merge``'s, or any Hugging Face model folder), not an adapter."""
    return ((path / "config.json").is_file() and not (path / "adapter_config.json").is_file()
            and any(path.glob("*.safetensors")))


def adapter_folder(ref: str, runs_dir: Path) -> Path:
    """A run folder, a run name under ``runs_dir``, or a plain PEFT adapter folder.

    Raises:
        RunError: none of these.
    """
    path = Path(ref)
    if (path / "adapter_config.json").is_file():
        return path
    if is_merged_folder(path):
        raise RunError(f"{ref}: a model folder with the adapter merged in, not an adapter; give the run it came "
                       "from")
    from lorakit.runs.catalog import find_run, read_manifest

    found = find_run(ref, runs_dir)
    if not (found / "adapter_config.json").is_file():
        raise RunError(f"{found}: the run has no adapter yet (status {read_manifest(found).get('status', '?')})")
    return found


def run_sections(folder: Path) -> tuple[dict[str, Any] | None, ModelSection, DataSection, str]:
    """(manifest, model section, data section, base model path) of a run, or of a plain PEFT adapter folder."""
    from lorakit.runs.catalog import read_manifest

    manifest_path = folder / "manifest.json"
    manifest = read_manifest(folder) if manifest_path.is_file() else None
    if manifest is not None:
        config = manifest.get("config")
        if not isinstance(config, dict) or not isinstance(config.get("model"), dict) or \
                not isinstance(config.get("data"), dict):
            raise RunError(f"{manifest_path}: records no model and data config; not a lorakit training run")
        model_section = ModelSection.model_validate(config["model"])
        data = DataSection.model_validate({**config["data"], "train": config["data"]["train"] or ["-"]})
        return manifest, model_section, data, manifest.get("base_model_path") or model_section.name_or_path
    try:
        adapter_config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise RunError(f"{folder / 'adapter_config.json'}: not readable as JSON ({e})") from None
    if not isinstance(adapter_config, dict):
        raise RunError(f"{folder / 'adapter_config.json'}: holds a {type(adapter_config).__name__}, not a PEFT "
                       "adapter config")
    base_path = str(adapter_config.get("base_model_name_or_path") or "")
    return None, ModelSection(name_or_path=base_path), DataSection(train=["-"]), base_path


def resolve_base(folder: Path, base_path: str, model_section: ModelSection,
                 manifest: dict[str, Any] | None = None) -> Any:
    """The base model, named as the run's manifest names it (a built-in name, a hub id) even when its weights
    are the converted copy in this machine's cache.

    Raises:
        ModelError: the adapter's base model is not available here.
    """
    from lorakit.model.resolve import ResolvedModel, resolve_model

    identity = (manifest or {}).get("base_model") or {"name": base_path}
    try:
        return (ResolvedModel(base_path, identity) if Path(base_path).is_dir()
                else resolve_model(base_path, model_section.revision))
    except ModelError as e:
        raise ModelError(f"{folder.name}: its base model {base_path!r} is not available here ({e})") from None


def run_tokenizer(folder: Path, resolved: Any) -> Any:
    """The run's own saved tokenizer when it has one (a template or pad token added), else its base's."""
    from lorakit.model.load import load_tokenizer
    from lorakit.model.resolve import ResolvedModel

    own_tokenizer = (folder / "tokenizer_config.json").is_file()
    return load_tokenizer(ResolvedModel(str(folder), {}) if own_tokenizer else resolved)


def run_prompting(folder: Path, tokenizer: Any, manifest: dict[str, Any] | None,
                  data: DataSection) -> tuple[Encoder, PromptShape]:
    """The encoder and prompt shape the run trained with."""
    from lorakit.data.dataset import build_encoder

    encoder, _ = build_encoder(data, tokenizer)
    shape_data = (manifest or {}).get("prompt_shape")
    return encoder, PromptShape.from_dict(shape_data) if shape_data else PromptShape(chat=bool(encoder.template))


def prompting_record(adapter: LoadedAdapter) -> dict[str, Any]:
    """What a merged model folder keeps of its run: its name and base, and how it wrapped its prompts."""
    identity = dict(adapter.base.identity) if adapter.base is not None else {}
    return {"merged_from": adapter.name, "base_model": {k: v for k, v in identity.items() if k != "file"},
            "prompt_shape": adapter.shape.as_dict(), "chat_template": adapter.encoder.template,
            "system_prompt": adapter.encoder.system_prompt, "max_length": adapter.max_length}


def load_merged(folder: Path, device: str = "auto") -> LoadedAdapter:
    """A model folder with an adapter merged in, asked the way its run was (``lorakit.json``); a folder without
    that record is asked through its tokenizer's chat template. Its ``model`` is the whole model: there is no
    base to compare with (``--base``).

    Raises:
        RunError: ``lorakit.json`` is not a JSON object. ModelError: the weights cannot be loaded.
    """
    from lorakit.model.load import load_base_model, load_tokenizer
    from lorakit.model.resolve import ResolvedModel
    from lorakit.textfile import read_json

    written = folder / PROMPTING_FILE
    record = read_json(written, RunError, dict, "must hold a JSON object, as export --merge writes it") \
        if written.is_file() else {}
    resolved = ResolvedModel(str(folder), {"name": str(folder)})
    dev = pick_device(device)
    tokenizer = load_tokenizer(resolved)
    model = load_base_model(resolved, ModelSection(name_or_path=str(folder)), dev.type).to(dev).eval()
    template = record.get("chat_template", getattr(tokenizer, "chat_template", None)) or ""
    encoder = Encoder(tokenizer, template, record.get("system_prompt") or None)
    shape = PromptShape.from_dict(record.get("prompt_shape") or {"chat": bool(template)})
    max_length = int(record.get("max_length") or DataSection(train=["-"]).max_length)
    log.info("loaded %s (merged model%s) on %s", folder.name, f" of {record['merged_from']}"
             if record.get("merged_from") else "", dev)
    return LoadedAdapter(folder.name, folder, model, tokenizer, encoder, shape, max_length, dev, None, None,
                         tuple(sorted(folder.glob("*.safetensors"))))


def load_adapter(ref: str, runs_dir: Path = Path("runs"), device: str = "auto") -> LoadedAdapter:
    """The adapter on its base model (from the run's manifest, else adapter_config.json), ready to generate; a
    merged model folder as it is (``load_merged``).

    Raises:
        RunError: no such run or adapter. ModelError: its base model is not available here.
    """
    from peft import PeftModel

    from lorakit.model.load import load_base_model

    if is_merged_folder(Path(ref)):
        return load_merged(Path(ref), device)
    folder = adapter_folder(ref, runs_dir)
    manifest, model_section, data, base_path = run_sections(folder)
    resolved = resolve_base(folder, base_path, model_section, manifest)
    dev = pick_device(device)
    tokenizer = run_tokenizer(folder, resolved)
    base = load_base_model(resolved, model_section.model_copy(update={"quantization": "none"}), dev.type)
    model = PeftModel.from_pretrained(base, str(folder)).to(dev).eval()
    encoder, shape = run_prompting(folder, tokenizer, manifest, data)
    log.info("loaded %s on %s (%s)", folder.name, base_path, dev)
    return LoadedAdapter(folder.name, folder, model, tokenizer, encoder, shape, data.max_length, dev, manifest,
                         resolved, (folder / "adapter_config.json", *sorted(folder.glob("adapter_model.*"))))
