"""Data: task specs, loading and validation, tokenized batches, the controlled shortcut."""
