"""Models: loading and checking, encoder-family adapters, physically pruned types, int8, inference."""
