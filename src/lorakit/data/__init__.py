"""Data: files -> rows -> conversations -> token ids and labels -> padding-free batches."""
