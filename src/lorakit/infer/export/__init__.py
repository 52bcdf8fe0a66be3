"""Ship an adapter: merged into its base as a model folder or a GGUF file, or as a llama.cpp LoRA GGUF."""
