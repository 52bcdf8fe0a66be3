"""The base model: resolve it (local, hub, GGUF cache), load it, attach the adapter."""
