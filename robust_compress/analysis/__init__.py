"""Analysis of shortcuts: per-sample uncertainty, easy/hard splits by bias-only models,
agreement."""
