"""robust-compress: compress BERT-family NLU models and measure the OOD robustness it costs.

Importing the package registers the physically pruned model types (`pruned_<type>`) with
transformers' Auto classes, so a pruned model reloads with `from_pretrained`.
"""

__version__ = "0.2.0"


def _register() -> None:
    from .models.pruned import register_all

    register_all()


_register()
