"""What a label name means: one class, whatever the case, separators or synonym a model or a file
spells it with (`models.labels` matches a saved classifier's classes to a task's with it; the config
checks a `label_map` with it, torch-free)."""

from __future__ import annotations

import re

# known spellings of one class (after lower-casing and joining words with "_")
SYNONYMS: dict[str, tuple[str, ...]] = {
    "entailment": ("entails", "entailed", "entail"),
    "contradiction": ("contradicts", "contradicted", "contradict", "contradictory"),
    "non_entailment": ("not_entailment", "non_entailed", "not_entailed", "nonentailment"),
    "not_duplicate": ("non_duplicate", "not_paraphrase", "0"),
    "duplicate": ("is_duplicate", "paraphrase", "1"),
    "supports": ("support", "supported"),
    "refutes": ("refute", "refuted"),
    "not_enough_info": ("nei", "not_enough_information", "notenoughinfo"),
}
_CANON = {alias: name for name, aliases in SYNONYMS.items() for alias in (name, *aliases)}


def canonical(name: str) -> str:
    """The class a label name means: case, spaces, '-' and '_' ignored, synonyms merged."""
    key = re.sub(r"[\s_\-]+", "_", str(name).strip().lower()).strip("_")
    return _CANON.get(key, key)
