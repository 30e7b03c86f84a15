"""robust-compress: compress BERT-family NLU models and measure the OOD robustness it costs."""

__version__ = "0.1.0"
