"""External trainers (kohya-ss sd-scripts, LLaMA-Factory, any command): tracked runs like lorakit's own."""
