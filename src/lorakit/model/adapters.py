"""Attach a LoRA adapter (or continue one) with PEFT, and save it in plain PEFT format."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from lorakit.config.schema import LoraSection
from lorakit.errors import ModelError

log = logging.getLogger(__name__)


def build_lora_config(section: LoraSection) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=section.r,
        lora_alpha=section.alpha,
        lora_dropout=section.dropout,
        target_modules=section.target_modules,
        use_dora=section.use_dora,
        use_rslora=section.use_rslora,
        bias="none",
        task_type="CAUSAL_LM",
    )


# adapter_config.json keys that must match the config for the weights to mean the same thing.
_SHAPE_KEYS = {"r": "r", "lora_alpha": "alpha", "use_dora": "use_dora", "use_rslora": "use_rslora"}


def same_base_model(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two manifest ``base_model`` identities name the same weights (file hash, else name and revision)."""
    if a.get("sha256") or b.get("sha256"):
        return a.get("sha256") == b.get("sha256")
    return (a.get("name"), a.get("revision")) == (b.get("name"), b.get("revision"))


def check_init_from_shape(section: LoraSection) -> Path:
    """The adapter ``lora.init_from`` names exists and has this config's shape (rank, alpha, DoRA, rsLoRA).

    Needs no model, so it runs before a run folder is created.

    Raises:
        ModelError: no adapter there, or a different shape, saying what differs.
    """
    assert section.init_from is not None
    source = Path(section.init_from)
    if not (source / "adapter_config.json").is_file():
        raise ModelError(f"lora.init_from: no adapter_config.json in {source}; "
                         "point it at a run folder or a PEFT adapter folder")
    saved = _adapter_config(source)
    if (source / "manifest.json").is_file():  # read again once the base model is known; broken, said now
        _json_object(source / "manifest.json", "a lorakit run manifest")
    wanted = section.model_dump()
    differ = [f"{key} {saved.get(key)} there, lora.{ours} {wanted[ours]} here"
              for key, ours in _SHAPE_KEYS.items() if saved.get(key, False) != wanted[ours]]
    if differ:
        raise ModelError(f"lora.init_from: the adapter in {source} has a different shape: {'; '.join(differ)}; "
                         "set these lora keys to match the adapter you continue from")
    return source


def _adapter_config(source: Path) -> dict[str, Any]:
    return _json_object(source / "adapter_config.json", "a PEFT adapter config")


def _json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON file of the ``lora.init_from`` folder as a dict.

    Raises:
        ModelError: the file is not a JSON object, naming it.
    """
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ModelError(f"lora.init_from: {path} is not readable as JSON ({e}); point lora.init_from at a run "
                         "folder or a PEFT adapter folder") from None
    if not isinstance(saved, dict):
        raise ModelError(f"lora.init_from: {path} holds a {type(saved).__name__}, not {what}")
    return saved


def check_init_from(section: LoraSection, identity: dict[str, Any], names: set[str]) -> dict[str, Any]:
    """Check that ``lora.init_from`` can continue on this base model; return the parent record.

    Args:
        identity: the base model's identity (``ResolvedModel.identity``).
        names: what the base model may be called in a plain PEFT adapter_config.json
            (``model.name_or_path``, the resolved folder, the identity's name).

    Raises:
        ModelError: no adapter there, or a different base model or adapter shape, saying what differs.
    """
    from lorakit.model.resolve import sha256_file

    source = check_init_from_shape(section)
    manifest_path = source / "manifest.json"
    parent: dict[str, Any] = {"path": str(source.resolve()), "name": source.name}
    if manifest_path.is_file():
        manifest = _json_object(manifest_path, "a lorakit run manifest")
        theirs = manifest.get("base_model") or {}
        if not same_base_model(theirs, identity):
            raise ModelError(f"lora.init_from: {source.name} was trained on {_describe(theirs)}, "
                             f"but this run's base model is {_describe(identity)}")
        parent.update(run=manifest.get("name", source.name), status=manifest.get("status"),
                      config_sha256=manifest.get("config_sha256"))
    else:
        saved = _adapter_config(source)
        base = str(saved.get("base_model_name_or_path") or "")
        known = {n for name in names for n in (name, Path(name).name)}
        if base and base not in known and Path(base).name not in known:
            raise ModelError(f"lora.init_from: the adapter in {source} was trained on {base!r}, "
                             f"but this run's base model is {identity.get('name')!r}")
    weights = source / "adapter_model.safetensors"
    if weights.is_file():
        parent["adapter_sha256"] = sha256_file(weights)
    return parent


def _describe(identity: dict[str, Any]) -> str:
    digest = f" (sha256 {identity['sha256'][:12]})" if identity.get("sha256") else ""
    revision = f"@{identity['revision']}" if identity.get("revision") else ""
    return f"{identity.get('name', '?')}{revision}{digest}"


def check_target_modules(model: Any, targets: str | list[str]) -> None:
    """Every name in ``lora.target_modules`` names a module of the model (PEFT refuses a list none of whose
    names match with a traceback, and adapts fewer layers than asked, without a word, when only some match).

    Raises:
        ModelError: the names that match nothing, and the model's linear layers to choose from.
    """
    import torch

    if targets == "all-linear":
        return
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in targets if not any(name == t or name.endswith(f".{t}") for name in names)]
    if missing:
        linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                         if isinstance(module, torch.nn.Linear) and name != "lm_head"})
        raise ModelError(f"lora.target_modules: {', '.join(missing)} {'names' if len(missing) == 1 else 'name'} "
                         f"no module of this model; its linear layers are {', '.join(linear)} "
                         "(or set all-linear)")


def check_target_modules_of(model_path: str, section: LoraSection, revision: str | None = None) -> None:
    """``check_target_modules`` before any weight is read: on the model built from its config.json on the meta
    device (no memory, a few milliseconds once transformers' model code is imported, which training imports
    anyway), so a typo fails before the run folder exists.

    A config transformers cannot build this way is left to the check after loading.

    Raises:
        ModelError: as ``check_target_modules``.
    """
    if section.init_from is not None or section.target_modules == "all-linear":
        return
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(model_path, revision=revision)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config)
    except Exception as e:  # an architecture this cannot build is checked once its weights load
        log.debug("lora.target_modules checked after loading: %s has no meta-device build (%s)", model_path, e)
        return
    check_target_modules(skeleton, section.target_modules)


def attach_adapter(model: Any, section: LoraSection) -> Any:
    """Wrap the base model with a trainable adapter: fresh, or loaded from ``lora.init_from``.

    ``check_init_from`` has vetted an adapter to start from; loading it still checks every
    tensor's shape against the base model.

    Raises:
        ModelError: the adapter does not fit this base model (which tensor, which shapes).
    """
    from peft import PeftModel, get_peft_model

    if section.init_from is None:
        check_target_modules(model, section.target_modules)
        peft_model = get_peft_model(model, build_lora_config(section))
    else:
        try:
            peft_model = PeftModel.from_pretrained(model, section.init_from, is_trainable=True)
        except Exception as e:
            mismatch = next((line.strip() for line in str(e).splitlines() if "size mismatch" in line), str(e))
            raise ModelError(f"lora.init_from: the adapter in {section.init_from} does not fit this base model: "
                             f"{mismatch[:300]}") from None
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    log.info("adapter: %.2fM trainable parameters (r=%d, alpha=%d)", trainable / 1e6, section.r, section.alpha)
    return peft_model

