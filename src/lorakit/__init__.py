"""lorakit: LoRA fine-tuning without the toil."""

__version__ = "0.1.0"
