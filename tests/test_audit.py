"""`audit`: the robustness card of existing models, none of them trained."""

from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pytest

from robust_compress.io import UserError
from robust_compress.metrics import is_collapsed
from robust_compress.report import build_report
from robust_compress.stages import audit

from .conftest import ORDERS, save_reordered, tiny_run_config
from .test_cards import _card
from .test_labels import _same_tables, cli

AUDIT = {"max_steps": 4}  # the bias-only model an audit trains (once)


def test_audit_of_a_teacher_and_two_compressed_models(written, tmp_path):
    """The numbers are the ones the models were scored with when they were made (same predictions),
    laid out as a study the report reads; cards are rewritten with the audit's numbers."""
    models = [
        shutil.copytree(written[k], tmp_path / "models" / written[k].name)
        for k in ("teacher", "mag", "int8")
    ]
    cfg = tiny_run_config(models[0], written["task"], tmp_path / "x", **AUDIT)
    result = audit(
        [str(m) for m in models],
        cfg,
        tmp_path / "audit",
        write_cards=True,
        speed_examples=32,
        repeats=1,
    )
    out = tmp_path / "audit"
    names = [r["name"] for r in result["models"]]
    assert names == ["teacher", "mag", "mag-int8"]
    for m, name in zip(models, names, strict=True):
        _same_tables(m, out / "models" / name)  # audit = the model's own evaluation
    report = build_report(out)
    assert {"report.html", "report.md", "metrics.json"} <= {p.name for p in report.iterdir()}
    rows = {
        r["name"]: r
        for r in json.loads((report / "metrics.json").read_text())["rows"]
        if r["level"] == "run"
    }
    speed = (
        pd.read_csv(report / "speed.csv").query("level == 'run'").set_index("name")
    )  # (timed: apart)
    easy = pd.read_parquet(out / "easy_hard" / "dev.parquet")
    timed = json.loads((out / "speed.json").read_text())["examples_per_s"]
    assert set(timed) == set(names)
    bias_dirs = list((tmp_path / "cache" / "bias").glob("partial-*"))
    assert len(bias_dirs) == 1 and result["bias_model"] == str(bias_dirs[0])
    for r in result["models"]:
        row, pred = (
            rows[r["name"]],
            pd.read_parquet(out / "models" / r["name"] / "predictions" / "dev.parquet"),
        )
        assert r["acc_id"] == pytest.approx(row["acc_id"]) and r["delta"] == pytest.approx(
            row["delta"]
        )
        assert r["ece_id"] == pytest.approx(row["ece_id"]) and r["collapsed"] == is_collapsed(pred)
        # easy / hard accuracy recomputed here: the predictions joined to the easy/hard split by id
        joined = pred.assign(right=pred["pred"] == pred["gold"]).merge(
            easy[["id", "easy"]], on="id", how="inner", validate="one_to_one"
        )
        assert len(joined) == len(pred) and 0 < joined["easy"].sum() < len(joined)
        easy_acc, hard_acc = (
            joined.loc[m, "right"].mean() for m in (joined["easy"], ~joined["easy"])
        )
        assert (r["easy_acc"], r["hard_acc"]) == pytest.approx((easy_acc, hard_acc), abs=1e-12)
        # each model's own rate as timed, and its speed-up: that rate over the first model's
        assert r["examples_per_s"] == timed[r["name"]] > 0
        assert r["speedup"] == pytest.approx(timed[r["name"]] / timed[names[0]], rel=1e-12)
        assert r["speedup"] == pytest.approx(speed.loc[r["name"], "speedup"])
        if row.get("f_bias") is not None and r["name"] != "teacher":
            assert r["f_bias"] == pytest.approx(row["f_bias"])
    assert result["models"][0]["speedup"] == 1.0
    assert "Table 4: Easy / hard examples of dev" in (report / "report.md").read_text()
    card, results = _card(models[1])  # rewritten with the audit's numbers and measured speed-up
    assert results[("dev", "accuracy")] == round(result["models"][1]["acc_id"], 4)
    assert (
        f"{result['models'][1]['speedup']:.2f}× teacher" in card.text
        and "Audited by robust-compress" in card.text
    )
    assert "compression: magnitude" in card.text  # the recipe is kept


def test_audit_on_the_command_line_reuses_the_cached_bias_model(written, tmp_path):
    cache = tmp_path / "cache"
    args = [
        "audit",
        str(written["teacher"]),
        str(written["mag"]),
        str(written["int8"]),
        "--task",
        str(written["task"]),
        "-o",
        str(tmp_path / "a"),
        "-s",
        "eval_limit=40",
        "-s",
        f"cache_dir={cache}",
        "-s",
        "max_length=32",
        "-s",
        "batch_size=16",
        "-s",
        "lr=0.002",
        "-s",
        "seed=0",
        "-s",
        "max_steps=4",
        "--examples",
        "16",
        "--repeats",
        "1",
    ]
    r = cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "bias-only model: training" in r.stderr
    lines = [
        x
        for x in r.stdout.splitlines()
        if x.split()[:1] and x.split()[0] in ("teacher", "mag", "mag-int8")
    ]
    assert len(lines) == 3 and re.search(r"1\.00x", lines[0]) and "report:" in r.stdout
    summary = json.loads((tmp_path / "a" / "models" / "mag" / "summary.json").read_text())
    assert summary["splits"]["dev"]["n"] == 40  # -s eval_limit=40 reached the evaluation
    assert (tmp_path / "a" / "report" / "report.html").is_file()
    refused = cli(*args)  # an earlier audit of the tool's is replaced only with --overwrite
    assert refused.returncode == 2 and "pass --overwrite" in refused.stderr, refused.stderr
    again = cli(*args, "--overwrite")
    assert again.returncode == 0 and "bias-only model: cached" in again.stderr, again.stderr[-3000:]
    assert len(list((cache / "bias").glob("partial-*"))) == 1


def test_audit_of_models_in_other_label_orders_gives_the_original_predictions(written, tmp_path):
    root = tmp_path / "copies"
    copies = [
        save_reordered(written["teacher"], root / n, names, rows)
        for n, (names, rows, _) in ORDERS.items()
    ]
    cfg = tiny_run_config(
        written["teacher"], written["task"], tmp_path / "x", label_map=ORDERS["label-k"][2], **AUDIT
    )
    result = audit(
        [str(written["teacher"])] + [str(c) for c in copies],
        cfg,
        tmp_path / "audit",
        bias=str(written["bias"]),
        speed_examples=0,
    )
    assert [r["name"] for r in result["models"]] == ["teacher", *ORDERS]
    for name in ORDERS:
        _same_tables(
            tmp_path / "audit" / "models" / "teacher", tmp_path / "audit" / "models" / name
        )
        assert result["models"][list(ORDERS).index(name) + 1]["f_bias"] in (
            None,
            pytest.approx(1.0),
        )
    assert not (tmp_path / "cache" / "bias").exists()  # --bias given: nothing trained


def test_audit_refuses_bad_input_before_any_work(written, tiny_dir, tmp_path):
    from transformers import BertModel

    BertModel.from_pretrained(tiny_dir).save_pretrained(tmp_path / "encoder")
    for f in tiny_dir.glob("*.txt"):
        (tmp_path / "encoder" / f.name).write_text(f.read_text())
    cfg = tiny_run_config(written["teacher"], written["task"], tmp_path / "x")
    with pytest.raises(UserError, match="encoder: not a fine-tuned classifier"):
        audit([str(written["teacher"]), str(tmp_path / "encoder")], cfg, tmp_path / "a")
    with pytest.raises(UserError, match="--write-card: acme/nli is a hub id"):
        from huggingface_hub import constants

        from .test_labels import make_hub_cache

        make_hub_cache(written["teacher"], tmp_path / "hub", "acme/nli")
        old, constants.HF_HUB_CACHE = constants.HF_HUB_CACHE, str(tmp_path / "hub")
        try:
            audit(["acme/nli"], cfg, tmp_path / "a", write_cards=True)
        finally:
            constants.HF_HUB_CACHE = old
    assert not (tmp_path / "a").exists()
