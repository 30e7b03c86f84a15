"""A model card with every model the tool writes: a README.md that huggingface_hub's ModelCard
parses, with model-index results for each ID and OOD set and the recipe in its text."""

from __future__ import annotations

import json

import yaml
from huggingface_hub import ModelCard

from robust_compress import __version__


def _card(folder):
    card = ModelCard.load(folder / "README.md")  # parses as the hub parses it
    return card, {
        (r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results or []
    }


def test_every_written_model_folder_has_a_card_with_its_results(written):
    folders = sorted(p.parent for p in written["root"].rglob("config.json"))
    assert {written[k] for k in ("teacher", "mag", "int8", "bias", "snapshot")} <= set(folders)
    for folder in folders:
        card, results = _card(folder)
        assert f"robust-compress {__version__}" in card.text
        if folder == written["snapshot"]:
            assert not results and "not evaluated" in card.text
            continue
        summary = json.loads((folder / "summary.json").read_text())
        assert results == {
            (s, "accuracy"): round(v["accuracy"], 4)
            for s, v in summary["splits"].items()
            if v["role"] in ("id", "ood")
        }
        assert card.data.to_dict()["model-index"][0]["name"] == folder.name
        lo, hi = summary["splits"]["dev"]["ci95"]
        assert f"[{100 * lo:.1f}, {100 * hi:.1f}]" in card.text  # the 95 % CI, in the text
        run = yaml.safe_load((folder / "run_config.yaml").read_text())
        assert (
            card.data.base_model == run["model"]
            and f"seeds: training {run['seed']}, data 0" in card.text
        )
    assert "compression: magnitude (" in _card(written["mag"])[0].text
    assert (
        "loss: distil" in _card(written["mag"])[0].text
        and '"sparsity": 0.5' not in _card(written["mag"])[0].text
    )
    assert "sparsity=0.5" in _card(written["mag"])[0].text
    assert "int8 scheme: dynamic-int8" in _card(written["int8"])[0].text
    assert "bias-only model: it sees only text_b" in _card(written["bias"])[0].text
