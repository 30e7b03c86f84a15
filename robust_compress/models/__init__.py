"""Models: loading and checking, encoder-family adapters, physically pruned types, int8, inference.

Importing this package registers the physically pruned model types (`pruned_<type>`) with
transformers' Auto classes: `import robust_compress.models`, then `from_pretrained` reloads them.
"""

from .pruned import register_all

register_all()
