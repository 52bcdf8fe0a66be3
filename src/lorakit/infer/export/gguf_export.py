"""``lorakit export --gguf``: the run merged into one GGUF, or its adapter as a llama.cpp LoRA GGUF beside the
base's GGUF, with an Ollama Modelfile; every file written beside its target and renamed into place."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorakit.atomic import check_writable, current_umask
from lorakit.disk import disk_full_error
from lorakit.errors import ModelError, RunError
from lorakit.infer.export.arch import architecture
from lorakit.infer.export.gguf_model import QUANTS, GgufMetadata, read_lorakit_fields, write_model_gguf
from lorakit.infer.export.lora_gguf import write_adapter_gguf
from lorakit.infer.export.modelfile import modelfile_text, prompt_system
from lorakit.model.tokenizer_files import save_tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GgufExport:
    model: Path  # the merged GGUF, or (adapter-only) the adapter GGUF
    base: Path | None  # adapter-only: the base model's GGUF the adapter applies to
    modelfile: Path | None  # None when the run's chat dialect has no Ollama translation


def check_request(quant: str, out: Path | None, force: bool) -> None:
    """Refuse before any model is loaded.

    Raises:
        ModelError: an unknown quantisation, or q4_k_m without llama.cpp. RunError: ``out`` exists.
    """
    if quant not in QUANTS:
        raise ModelError(f"--quant {quant}: no such quantisation; choose from {', '.join(QUANTS)}")
    if quant == "q4_k_m":
        from lorakit.infer.llamacpp_lib import require_llama_cpp

        require_llama_cpp("--quant q4_k_m (the gguf package has no Q4_K quantiser; llama.cpp's is used)")
    if out is not None and out.exists() and not out.is_dir() and not force:
        raise RunError(f"--out {out} exists; choose another file or add --force to replace it")


def base_id(identity: dict[str, Any]) -> str:
    """A short fingerprint of the base weights, written into base and adapter GGUFs to pair them."""
    stable = {k: v for k, v in identity.items() if k in ("name", "sha256", "revision", "source")}
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:16]


def source_gguf(identity: dict[str, Any]) -> Path | None:
    """The GGUF the base model was converted from, when it is still here (its tokenizer fields are exact)."""
    from lorakit.model.resolve import BUILTIN_MODELS

    if identity.get("source") != "gguf":
        return None
    if identity.get("name") in BUILTIN_MODELS:
        return BUILTIN_MODELS[identity["name"]].locate()
    path = Path(identity.get("file", ""))
    return path if path.is_file() else None


def write_atomically(target: Path, force: bool, write: Callable[[Path], Any]) -> Path:
    """``write(tmp)`` beside ``target``, then renamed onto it: a failure leaves no half-written file, and an
    existing file is replaced only with ``force`` (checked again at the moment of the rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{target.name}.partial-", dir=target.parent)
    os.close(handle)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes it private; an export is meant to be shared
        if target.exists() and not force:
            raise RunError(f"{target} appeared while exporting; kept it, add --force to replace it")
        os.replace(tmp, target)
    except Exception as e:
        full = disk_full_error(e, target)
        if full is None:
            raise
        raise full from e
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def metadata(adapter: Any, tokenizer_dir: Path, name: str) -> GgufMetadata:
    identity = dict(adapter.base.identity) if adapter.base is not None else {"name": "?"}
    extra = {"run": adapter.name, "base_id": base_id(identity),
             "base_model": json.dumps({k: v for k, v in identity.items() if k != "file"}),
             "prompt_shape": json.dumps(adapter.shape.as_dict()), "max_length": str(adapter.max_length),
             "system_prompt": adapter.encoder.system_prompt or ""}
    return GgufMetadata(name=name, base_model=str(identity.get("name")), chat_template=adapter.encoder.template,
                        tokenizer_dir=tokenizer_dir, source_gguf=source_gguf(identity), extra=extra)


def export_gguf(ref: str, out: Path | None = None, quant: str = "f16", adapter_only: bool = False,
                force: bool = False, runs_dir: Path = Path("runs")) -> GgufExport:
    """Write the GGUF (and, adapter-only, the base GGUF unless an equal one is already there) and a Modelfile.

    Raises:
        ModelError: an architecture, quantisation or adapter llama.cpp cannot take. RunError: ``out`` exists.
    """
    from lorakit.infer.load import adapter_folder, load_adapter

    check_request(quant, out, force)
    folder = adapter_folder(ref, runs_dir)
    default_name = f"{folder.name}-lora.gguf" if adapter_only else f"{folder.name}-{quant}.gguf"
    target = out or folder / "gguf" / default_name
    if target.is_dir():  # --out FOLDER: the file goes into it, under its default name (as cp does)
        target = target / default_name
    if target.is_dir():
        raise RunError(f"{target} is a folder; give --out a file name (a .gguf), or another folder")
    if target.exists() and not force:  # the default file, from an earlier export
        raise RunError(f"{target} exists; add --force to replace it, or --out for another file")
    check_writable(target.parent, str(target), "give --out a file elsewhere")
    adapter = load_adapter(str(folder), runs_dir, device="cpu")
    config = adapter.model.get_base_model().config
    arch = architecture(config)
    with tempfile.TemporaryDirectory() as tokenizer_dir:
        save_tokenizer(adapter.tokenizer, tokenizer_dir)
        meta = metadata(adapter, Path(tokenizer_dir), adapter.name)
        base_path = None
        if adapter_only:
            write_atomically(target, force, lambda p: write_adapter_gguf(p, adapter.model, config, arch, meta))
            base_path = ensure_base_gguf(adapter, config, arch, meta, target.parent, quant)
        else:
            state = adapter.model.merge_and_unload().state_dict()
            write_atomically(target, force, lambda p: write_quantized(p, state, config, arch, meta, quant))
    log.info("wrote %s", target)
    return GgufExport(target, base_path, write_modelfile(adapter, target, base_path, force))


def write_quantized(path: Path, state: dict[str, Any], config: Any, arch: Any, meta: GgufMetadata,
                    quant: str) -> None:
    """f16 and q8_0 with the gguf package; q4_k_m by llama.cpp's quantiser from an f16 file."""
    if quant != "q4_k_m":
        write_model_gguf(path, state, config, arch, meta, quant)
        return
    from lorakit.infer.llamacpp_lib import quantize

    f16 = path.with_name(path.name + ".f16")
    try:
        write_model_gguf(f16, state, config, arch, meta, "f16")
        quantize(f16, path, quant)
    finally:
        f16.unlink(missing_ok=True)


def ensure_base_gguf(adapter: Any, config: Any, arch: Any, meta: GgufMetadata, where: Path, quant: str) -> Path:
    """The base model's GGUF beside the adapter: reused when one with the same base fingerprint is there."""
    base_name = str(adapter.base.identity.get("name", "base")).replace("/", "--") if adapter.base else "base"
    path = where / f"{base_name}-{quant}.gguf"
    if path.exists():
        if read_lorakit_fields(path).get("lorakit.base_id") == meta.extra["base_id"]:
            log.info("reusing the base model's GGUF %s", path)
            return path
        raise RunError(f"{path} exists but holds another base model; move it away or choose another --out folder")
    state = {k.replace(".base_layer.", "."): v for k, v in adapter.model.get_base_model().state_dict().items()
             if "lora_" not in k}
    base_meta = GgufMetadata(name=meta.base_model, base_model=meta.base_model, chat_template=meta.chat_template,
                             tokenizer_dir=meta.tokenizer_dir, source_gguf=meta.source_gguf,
                             extra={"base_id": meta.extra["base_id"], "base_model": meta.extra["base_model"]})
    return write_atomically(path, False, lambda p: write_quantized(p, state, config, arch, base_meta, quant))


def write_modelfile(adapter: Any, target: Path, base_path: Path | None, force: bool) -> Path | None:
    eos = adapter.tokenizer.eos_token or ""
    encoder, shape = adapter.encoder, adapter.shape
    system = (prompt_system(encoder.template, shape.system or encoder.system_prompt,
                            encoder.render_prompt(shape.turns("x"))) if shape.chat else None)
    try:
        text = modelfile_text(base_path or target, target if base_path else None, encoder.template, shape, eos,
                              target.parent, system)
    except ValueError as e:
        log.warning("no Ollama Modelfile: %s", e)
        return None
    path = target.with_suffix(".Modelfile")
    return write_atomically(path, force, lambda p: p.write_text(text, encoding="utf-8"))
