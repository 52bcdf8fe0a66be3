"""Use an adapter: load it on its base model, generate, evaluate, merge."""
