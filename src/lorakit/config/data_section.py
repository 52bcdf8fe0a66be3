"""The ``data`` section of the run configuration."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from lorakit.config.section import Section

TEMPLATE_NAMES = ("auto", "tokenizer", "plain", "chatml", "gemma")


class DataSection(Section):
    train: list[str] = Field(
        description="Training data file(s): .jsonl, .json, .csv, .parquet or .txt, or datasets of a LLaMA-Factory "
        "registry: path/dataset_info.json#name1,name2."
    )
    eval: list[str] = Field(default_factory=list, description="Validation data file(s). Optional.")
    val_size: float = Field(
        0.0,
        ge=0.0,
        description="Hold out this share (below 1) or this many rows (1 or more) of the training data "
        "for validation when no eval files are given.",
    )
    format: Literal["auto", "alpaca", "messages", "prompt_completion", "segments", "text"] = Field(
        "auto", description="Row format; auto detects it per file from the fields of the first row."
    )
    template: str = Field(
        "auto",
        description="Chat template: auto (the tokenizer's own, else the one its special tokens imply, "
        "else plain), tokenizer, plain, chatml or gemma (lorakit's own three render tool calls too).",
    )
    system_prompt: str | None = Field(
        None, description="System message added to chat rows that have none of their own."
    )
    max_length: int = Field(1024, gt=1, description="Longest example, in tokens.")
    on_overflow: Literal["truncate", "drop", "error", "split"] = Field(
        "truncate",
        description="What to do with an example longer than max_length. split: cut plain-text rows into "
        "windows of max_length, so nothing is lost (chat rows are truncated, and counted).",
    )
    stride: int = Field(
        0, ge=0, description="With on_overflow: split, tokens each window repeats from the one before, as "
        "context only (they are trained once, in the earlier window).",
    )
    packing: bool = Field(
        False,
        description="Pack several examples into each row of up to max_length tokens. Batches are "
        "padding-free either way; packing changes what one batch element is.",
    )
    max_samples: int | None = Field(None, gt=0, description="Use at most this many training rows in all.")
    max_samples_per_file: int | None = Field(
        None, gt=0, description="Use at most the first this many rows of each training or validation file or "
        "registry dataset (LLaMA-Factory's max_samples, which caps its eval_dataset too).",
    )
    train_history: bool = Field(
        True, description="Train the answers in an alpaca row's history too (as LLaMA-Factory does); "
        "false: they are context only.",
    )
    use: Literal["chosen"] | None = Field(
        None, description="Preference pairs (chosen/rejected) are refused unless this is 'chosen': then the "
        "chosen answers are trained as supervised data.",
    )
    label_field: str | None = Field(
        None, description="Rows with a true/false field of this name (KTO's label, LLaMA-Factory's kto_tag): "
        "train only the rows where it is true. Without it such rows are refused.",
    )
    replace: dict[str, str] = Field(
        default_factory=dict, description="Fill {{key}} placeholders in the data, e.g. {name: lorakit, "
        "author: me} for LLaMA-Factory's identity.json.",
    )
    seed: int = Field(42, description="Seed for the validation split and the shuffling of rows.")

    @field_validator("train", "eval", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("train")
    @classmethod
    def _not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("needs at least one training file")
        return value

    @field_validator("template")
    @classmethod
    def _known_template(cls, value: str) -> str:
        if value not in TEMPLATE_NAMES:
            raise ValueError(f"unknown template {value!r}; choose one of {', '.join(TEMPLATE_NAMES)} (auto renders "
                             "with the tokenizer's own chat template, which LLaMA-Factory's template names copy)")
        return value

    @model_validator(mode="after")
    def _stride_below_max_length(self) -> DataSection:
        if self.stride and self.stride >= self.max_length:
            raise ValueError(f"data.stride ({self.stride}) must be below data.max_length ({self.max_length})")
        return self
