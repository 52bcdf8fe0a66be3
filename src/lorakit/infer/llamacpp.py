"""The llama.cpp engine: a run's export, an exported GGUF, or a base GGUF plus an adapter GGUF, prompted with
the token ids lorakit's own encoder makes (so the wrapping is exactly the training one)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorakit.errors import ModelError, RunError
from lorakit.infer.llamacpp_lib import open_gguf, require_llama_cpp

log = logging.getLogger(__name__)


@dataclass
class LlamaCppRunner:
    """Stands where a PeftModel stands in a LoadedAdapter; generation goes through ``generate_all``."""

    llm: Any  # llama_cpp.Llama

    def generate_all(self, prompts: Sequence[list[int]], stop_ids: Sequence[int], budgets: Sequence[int],
                     temperature: float = 0.0, seed: int = 0, on_done: Callable[[int], None] | None = None,
                     batch_size: int = 16) -> list[list[int]]:
        """New token ids for each prompt, in order: greedy ones ``batch_size`` sequences per decode step,
        sampled ones one after the other."""
        if temperature == 0:
            from lorakit.infer.llamacpp_batch import greedy_all

            return greedy_all(self.llm, prompts, budgets, set(stop_ids), batch_size, on_done)
        order = sorted(range(len(prompts)), key=lambda i: prompts[i])
        outputs: list[list[int]] = [[] for _ in prompts]
        stops = set(stop_ids)
        self.llm.set_seed(seed)
        for done, i in enumerate(order, 1):
            new: list[int] = []
            for token in self.llm.generate(prompts[i], temp=temperature, top_k=40, top_p=1.0, min_p=0.0,
                                           repeat_penalty=1.0, reset=True):
                if token in stops or len(new) >= budgets[i]:
                    break
                new.append(token)
            outputs[i] = new
            if on_done is not None and (done % 8 == 0 or done == len(order)):
                on_done(done)
        return outputs


def gguf_for_run(folder: Path, runs_dir: Path) -> Path:
    """The run's merged f16 GGUF, exported once into ``gguf/`` and reused while the adapter is unchanged."""
    from lorakit.infer.export.gguf_export import export_gguf

    target = folder / "gguf" / f"{folder.name}-f16.gguf"
    adapter_file = folder / "adapter_model.safetensors"
    if target.is_file() and adapter_file.is_file() and target.stat().st_mtime >= adapter_file.stat().st_mtime:
        return target
    log.info("exporting %s to GGUF for llama.cpp (once)", folder.name)
    return export_gguf(str(folder), target, "f16", force=True, runs_dir=runs_dir).model


def check_pair(base: Path, lora: Path) -> None:
    """An adapter GGUF must have been made on this base.

    Raises:
        ModelError: a different architecture or base fingerprint, naming both.
    """
    from lorakit.infer.export.gguf_model import read_lorakit_fields

    base_fields, lora_fields = read_lorakit_fields(base), read_lorakit_fields(lora)
    if lora_fields.get("general.type") != "adapter":
        raise ModelError(f"--lora {lora}: not a LoRA adapter GGUF (general.type is "
                         f"{lora_fields.get('general.type')!r})")
    if base_fields.get("general.architecture") != lora_fields.get("general.architecture"):
        raise ModelError(f"--lora {lora.name} is a {lora_fields.get('general.architecture')} adapter; "
                         f"{base.name} is {base_fields.get('general.architecture')}")
    expected, found = lora_fields.get("lorakit.base_id"), base_fields.get("lorakit.base_id")
    if expected and found and expected != found:
        raise ModelError(f"--lora {lora.name} was trained on {lora_fields.get('general.base_model.0.name')}, "
                         f"not on {base.name}; give the base GGUF exported with it")


def resolve_files(ref: str, lora: Path | None, runs_dir: Path) -> tuple[Path, Path | None, Path | None]:
    """(model GGUF, adapter GGUF or None, run folder or None) for a run, a GGUF, or a base GGUF plus ``lora``.

    Raises:
        RunError: none of these. ModelError: an adapter GGUF on the wrong base.
    """
    from lorakit.infer.load import adapter_folder

    path = Path(ref)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise RunError(f"{ref}: no such GGUF file")
        if lora is not None:
            if not lora.is_file():
                raise RunError(f"--lora {lora}: no such file")
            check_pair(path, lora)
        return path, lora, None
    if lora is not None:
        raise RunError("--lora applies to a base GGUF; with a run, the run's own adapter is used")
    folder = adapter_folder(ref, runs_dir)
    return gguf_for_run(folder, runs_dir), None, folder


def mark_template_tokens(tokenizer: Any, model: Path, template: str) -> None:
    """Make the control tokens the chat template writes (``<|im_start|>``, ``<start_of_turn>``...) single
    tokens again: a tokenizer rebuilt from a GGUF by transformers may split them into characters."""
    import gguf

    from lorakit.infer.export.gguf_fields import read_fields

    fields = read_fields(model, lambda key: key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type"))
    tokens, types = fields["tokenizer.ggml.tokens"].value, fields["tokenizer.ggml.token_type"].value
    control = (gguf.TokenType.CONTROL, gguf.TokenType.USER_DEFINED)
    wanted = [text for text, kind in zip(tokens, types, strict=True)
              if kind in control and text and text in template]
    if wanted:
        tokenizer.add_special_tokens({"additional_special_tokens": wanted}, replace_extra_special_tokens=False)


def load_llamacpp(ref: str, runs_dir: Path = Path("runs"), lora: Path | None = None) -> Any:
    """A LoadedAdapter whose model is llama.cpp: prompts are encoded by the run's tokenizer and template
    (read back from the GGUF's own fields when the run is not here)."""
    from lorakit.data.prompt_shape import PromptShape
    from lorakit.data.tokenize import Encoder
    from lorakit.infer.export.gguf_model import read_lorakit_fields
    from lorakit.infer.load import LoadedAdapter, resolve_base, run_prompting, run_sections, run_tokenizer

    require_llama_cpp("--engine llama.cpp")
    model, adapter_gguf, folder = resolve_files(ref, lora, runs_dir)
    fields = read_lorakit_fields(adapter_gguf or model)
    run_name = fields.get("lorakit.run")
    if folder is None and run_name and (runs_dir / run_name / "adapter_config.json").is_file():
        folder = runs_dir / run_name  # the run is here: its own tokenizer, no conversion from the GGUF
    if folder is not None:
        manifest, model_section, data, base_path = run_sections(folder)
        tokenizer = run_tokenizer(folder, resolve_base(folder, base_path, model_section, manifest))
        encoder, shape = run_prompting(folder, tokenizer, manifest, data)
        max_length = data.max_length
    else:
        from transformers import AutoTokenizer

        manifest = None
        tokenizer = AutoTokenizer.from_pretrained(str(model.parent), gguf_file=model.name)
        template = fields.get("tokenizer.chat_template") or read_lorakit_fields(model).get("tokenizer.chat_template")
        mark_template_tokens(tokenizer, model, template or "")
        encoder = Encoder(tokenizer, template or "", fields.get("lorakit.system_prompt") or None)
        shape = PromptShape.from_dict(fields.get("lorakit.prompt_shape") or {"chat": bool(template)})
        max_length = int(fields.get("lorakit.max_length") or 1024)
    llm = open_gguf(model, adapter_gguf, context=max(2048, 2 * max_length))
    runner = LlamaCppRunner(llm)
    log.info("loaded %s in llama.cpp%s", model.name, f" with {adapter_gguf.name}" if adapter_gguf else "")
    return LoadedAdapter(run_name or model.stem, folder or model.parent, runner, tokenizer, encoder, shape,
                         max_length, "cpu", manifest, weights=(model, *([adapter_gguf] if adapter_gguf else [])))
