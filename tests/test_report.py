"""Study report: every number recomputed from prediction tables; all-or-nothing output folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robust_compress.io import UserError
from robust_compress.report import build_report

MNLI = ["entailment", "neutral", "contradiction"]
HANS = ["entailment", "non-entailment"]
HEURISTICS = ["lexical_overlap", "subsequence", "constituent"]
N_DEV, N_HANS = 240, 180
CUE_RUN = "magnitude-0.70/ce/seed1"


def _table(rng, labels, n, p_correct, meta=None):
    """A prediction table whose per-example correctness is drawn with probability `p_correct`."""
    gold = rng.integers(0, len(labels), n)
    correct = rng.random(n) < p_correct
    pred = np.where(correct, gold, (gold + rng.integers(1, len(labels), n)) % len(labels))
    conf = np.clip(rng.normal(0.6 + 0.3 * correct, 0.1), 1 / len(labels), 1.0)
    df = pd.DataFrame(
        {
            "id": [f"x{i}" for i in range(n)],
            "gold": [labels[g] for g in gold],
            "pred": [labels[p] for p in pred],
            "correct": correct,
            "confidence": conf,
            "loss": -np.log(np.where(correct, conf, 1 - conf)),
        }
    )
    for j, name in enumerate(labels):
        df[f"p_{name}"] = np.where(pred == j, conf, (1 - conf) / (len(labels) - 1))
    for k, v in (meta or {}).items():
        df[k] = v
    return df


def _write_run(
    study: Path, entry: dict, rng, easy: np.ndarray, acc: float, cue: bool = False
) -> None:
    folder = study / entry["path"]
    (folder / "predictions").mkdir(parents=True)
    p_dev = np.where(easy, min(acc + 0.1, 0.99), acc - 0.15)  # easy examples are easier
    _table(rng, MNLI, N_DEV, p_dev).to_parquet(
        folder / "predictions" / "dev_matched.parquet", index=False
    )
    heur = np.repeat(HEURISTICS, N_HANS // 3)
    _table(
        rng, HANS, N_HANS, acc - 0.3, {"heuristic": heur, "text": [f"t{i}" for i in range(N_HANS)]}
    ).to_parquet(folder / "predictions" / "hans.parquet", index=False)
    # a stale summary whose numbers the report must NOT use
    roles = {"dev_matched": "id", "hans": "ood"}
    if cue:  # controlled-shortcut copies of the ID split, as data.load.load_eval_splits adds them
        for name, p in (("dev_matched+cue_aligned", 0.95), ("dev_matched+cue_conflicting", 0.4)):
            _table(rng, MNLI, N_DEV, p).to_parquet(
                folder / "predictions" / f"{name}.parquet", index=False
            )
            roles[name] = "cue"
    (folder / "summary.json").write_text(
        json.dumps(
            {
                "splits": {s: {"role": r, "accuracy": 0.0} for s, r in roles.items()},
                "id_split": "dev_matched",
                "acc_id": 0.0,
                "acc_ood": 0.0,
                "delta": 9.9,
                "f_bias": 9.9,
            }
        )
    )
    total = 110_000_000
    sparsity = entry.get("sparsity") or 0
    (folder / "compression.json").write_text(
        json.dumps(
            {
                "parameters": total,
                "nonzero_parameters": int(total * (1 - sparsity)),
                "method": entry["method"],
            }
        )
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A teacher (1 seed) + magnitude pruning at 2 sparsities × 2 losses × 2 seeds, HANS-like OOD.

    Laid out as study.run.write_index does: one group per compression holding both losses, run
    names with slashes, an absolute path for the teacher, and no `sparsity` key for the teacher.
    """
    study = tmp_path_factory.mktemp("study")
    rng = np.random.default_rng(0)
    easy = rng.random(N_DEV) < 0.55
    entries = [
        {
            "name": "teacher",
            "path": str(study / "artifacts" / "teacher"),
            "group": "teacher",
            "method": "teacher",
            "loss": "ce",
            "seed": 1,
            "is_teacher": True,
        }
    ]
    for sp in (0.4, 0.7):
        for loss in ("ce", "rmc"):
            for seed in (1, 2):
                group = f"magnitude-{sp:.2f}"
                entries.append(
                    {
                        "name": f"{group}/{loss}/seed{seed}",
                        "path": f"artifacts/compress-{len(entries)}",
                        "group": group,
                        "method": "magnitude",
                        "loss": loss,
                        "sparsity": sp,
                        "seed": seed,
                        "is_teacher": False,
                    }
                )
    for e in entries:
        acc = 0.85 - 0.1 * (e.get("sparsity") or 0) + (0.03 if e["loss"] == "rmc" else 0)
        _write_run(study, e, rng, easy, acc, cue=e["name"] == CUE_RUN)
    (study / "index.json").write_text(json.dumps(entries))
    # what the speed stage writes: every run timed side by side with the teacher
    (study / "speed.json").write_text(
        json.dumps(
            {
                "examples_per_s": {
                    e["name"]: 100.0 + 50 * (e.get("sparsity") or 0) for e in entries
                },
                "harness": {"examples": 512},
            }
        )
    )
    (study / "easy_hard").mkdir()
    pd.DataFrame({"id": [f"x{i}" for i in range(N_DEV)], "easy": easy}).to_parquet(
        study / "easy_hard" / "dev_matched.parquet", index=False
    )
    return study


@pytest.fixture(scope="module")
def report(study) -> Path:
    return build_report(study)


def _preds(study: Path, entry: dict, split: str) -> pd.DataFrame:
    return pd.read_parquet(study / entry["path"] / "predictions" / f"{split}.parquet")


def _unit(e: dict) -> str:
    return e["group"] if e["is_teacher"] else f"{e['group']}/{e['loss']}"


def test_every_table_and_figure_is_in_the_html(report):
    assert report.name == "report" and report.is_dir()
    page, md = (report / "report.html").read_text(), (report / "report.md").read_text()
    for heading in (
        "Table 1: Accuracy per split",
        "Table 2: Relative bias, model size and speed",
        "Table 3: hans accuracy by heuristic × gold label",
        "Table 4: Easy / hard examples of dev_matched",
        "Table 5: Controlled-shortcut reliance",
        "What wins it back: each loss against the Vanilla row of its compression",
    ):
        assert f"<h2>{heading}" in page and f"## {heading}" in md
    imgs = re.findall(r"<img alt='([^']+)' src='data:image/png;base64,", page)
    assert len(imgs) == page.count("<img") == 6 and all(imgs)
    pngs = sorted(p.name for p in (report / "figures").glob("*.png"))
    assert pngs == [
        "accuracy_vs_sparsity.png",
        "confidence_easy_hard_dev_matched.png",
        "easy_hard_gap_dev_matched.png",
        "reliability.png",
        "speed_robustness.png",
        "wins_back.png",
    ]
    assert all(f"](figures/{name})" in md for name in pngs)
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", page) and "<script" not in page
    for cell in ("lexical_overlap/entailment", "constituent/non-entailment", "magnitude-0.70/rmc"):
        assert cell in page
    assert "(error bars: std over 2 seeds)" in page  # captions match the seeds there are
    assert "<div class='scroll'><table>" in page  # wide tables scroll inside the page, not the page
    assert (
        "text/" not in page and "cue_aligned" not in page
    )  # no breakdown by carried text; cue copies hidden
    table1 = page.split("<h2>Table 1")[1].split("</table>")[0]
    assert table1.count("<tr>") == 1 + 5  # header + teacher + 2 sparsities x 2 losses


def test_metrics_match_pandas_recomputation(study, report):
    data = json.loads((report / "metrics.json").read_text())
    rows = {(r["level"], r["name"]): r for r in data["rows"]}
    index = json.loads((study / "index.json").read_text())
    assert data["teacher"] == "teacher"
    assert len(rows) == len(index) + 5 == len(pd.read_csv(report / "metrics.csv"))
    easy = pd.read_parquet(study / "easy_hard" / "dev_matched.parquet").set_index("id")["easy"]

    def direct(e):
        dev, hans = _preds(study, e, "dev_matched"), _preds(study, e, "hans")
        acc_id, acc_ood = dev["correct"].mean(), hans["correct"].mean()
        m = dev["id"].map(easy)
        sub = hans[(hans["heuristic"] == "subsequence") & (hans["gold"] == "non-entailment")]
        return {
            "acc.dev_matched": acc_id,
            "acc.hans": acc_ood,
            "acc_id": acc_id,
            "acc_ood": acc_ood,
            "delta": (acc_id - acc_ood) / acc_id,
            "eh.dev_matched.gap": dev["correct"][m].mean() - dev["correct"][~m].mean(),
            "eh.dev_matched.easy_conf": dev["confidence"][m].mean(),
            "by.hans.heuristic.subsequence/non-entailment": sub["correct"].mean(),
        }

    expected = {e["name"]: direct(e) for e in index}
    t_delta = expected["teacher"]["delta"]
    for e in index:
        got, want = rows[("run", e["name"])], expected[e["name"]]
        assert got["unit"] == _unit(e)
        for k, v in want.items():
            assert got[k] == pytest.approx(v, abs=1e-12), (e["name"], k)
        assert got["f_bias"] == pytest.approx(want["delta"] / t_delta)
        assert got["delta"] != 9.9  # the stale summary.json is ignored
        assert got["acc.hans.ci_lo"] <= got["acc.hans"] <= got["acc.hans.ci_hi"]
    for unit in {_unit(e) for e in index}:
        names = [e["name"] for e in index if _unit(e) == unit]
        got = rows[("group", unit)]
        assert got["n_seeds"] == len(names)
        for k in ("acc_ood", "delta", "eh.dev_matched.gap"):
            vals = [expected[n][k] for n in names]
            assert got[k] == pytest.approx(np.mean(vals), abs=1e-12)
            if len(vals) > 1:
                assert got[f"{k}.std"] == pytest.approx(np.std(vals, ddof=1), abs=1e-12)
        assert got["f_bias"] == pytest.approx(
            np.mean([expected[n]["delta"] for n in names]) / t_delta
        )
    # CI of every run's accuracy: the percentile bootstrap over its examples, recomputed here with
    # numpy from the pandas `correct` column (seed 0, 1000 resamples, 2.5 / 97.5 percentiles), and
    # about as wide as the normal interval of a proportion, 1.96 sqrt(p (1 - p) / n) each side
    for e in index:
        got = rows[("run", e["name"])]
        for split in ("dev_matched", "hans"):
            correct = _preds(study, e, split)["correct"].to_numpy(float)
            lo, hi = _bootstrap_by_hand(correct)
            where = (e["name"], split)
            assert got[f"acc.{split}.ci_lo"] == pytest.approx(lo, abs=1e-12), where
            assert got[f"acc.{split}.ci_hi"] == pytest.approx(hi, abs=1e-12), where
            p, n = correct.mean(), len(correct)
            assert lo < p < hi, where
            assert 0.8 < (hi - lo) / (2 * 1.96 * np.sqrt(p * (1 - p) / n)) < 1.2, where
        assert [got["acc_ood.ci_lo"], got["acc_ood.ci_hi"]] == [
            got["acc.hans.ci_lo"],
            got["acc.hans.ci_hi"],
        ]  # one OOD split: its own interval
    # over seeds: the single-seed teacher keeps its run's bootstrap CI, Student t over 2 seeds
    teacher = rows[("group", "teacher")]
    hans_t = _preds(study, index[0], "hans")["correct"].to_numpy(float)
    assert [teacher["acc_ood.ci_lo"], teacher["acc_ood.ci_hi"]] == pytest.approx(
        _bootstrap_by_hand(hans_t), abs=1e-12
    )
    g = rows[("group", "magnitude-0.40/rmc")]
    half = 12.706 * g["acc_ood.std"] / np.sqrt(2)
    assert [g["acc_ood.ci_lo"], g["acc_ood.ci_hi"]] == pytest.approx(
        [max(g["acc_ood"] - half, 0), min(g["acc_ood"] + half, 1)]
    )
    assert teacher["f_bias"] == pytest.approx(1.0)
    speed = pd.read_csv(report / "speed.csv").set_index(
        ["level", "name"]
    )  # timings live beside the metrics
    assert speed.loc[("group", "magnitude-0.40/ce"), "speedup"] == pytest.approx(120 / 100)
    assert (
        "speedup" not in rows[("group", "magnitude-0.40/ce")]
    )  # metrics.json: what predictions determine
    assert rows[("group", "magnitude-0.70/rmc")]["nonzero_parameters"] == pytest.approx(
        110e6 * 0.3, rel=1e-6
    )
    # shortcut reliance: recomputed from the cue prediction tables of the one run that has them
    assert rows[("group", "magnitude-0.70/ce")]["shortcut.reliance.n"] == 1
    cue_entry = next(e for e in index if e["name"] == CUE_RUN)
    a, c = (
        _preds(study, cue_entry, f"dev_matched+cue_{k}")["correct"].mean()
        for k in ("aligned", "conflicting")
    )
    assert rows[("run", CUE_RUN)]["shortcut.reliance"] == pytest.approx(a - c, abs=1e-12)
    assert "shortcut.reliance" not in teacher


def _bootstrap_by_hand(correct: np.ndarray) -> tuple[float, float]:
    """Percentile 95% interval of the mean of 0/1 outcomes: 1000 resamples of the examples with
    replacement (numpy's default_rng(0)), their means' 2.5th and 97.5th percentiles."""
    n = len(correct)
    resampled = correct[np.random.default_rng(0).integers(0, n, size=(1000, n))]
    means = resampled.sum(axis=1) / n
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def test_missing_index_names_the_file(tmp_path):
    with pytest.raises(UserError, match=re.escape(str(tmp_path / "index.json"))):
        build_report(tmp_path)
    assert not (tmp_path / "report").exists()


def test_corrupt_parquet_leaves_no_report(study, tmp_path):
    import shutil

    copy = tmp_path / "study"
    shutil.copytree(study, copy, ignore=shutil.ignore_patterns("report"))
    index = json.loads((copy / "index.json").read_text())
    bad = copy / index[-1]["path"] / "predictions" / "hans.parquet"
    good = bad.read_bytes()
    bad.write_bytes(b"PAR1 this is not a parquet file")
    with pytest.raises(UserError, match=re.escape(str(bad))):
        build_report(copy)
    assert not (copy / "report").exists()
    assert not [
        p for p in copy.iterdir() if p.name.startswith(".report")
    ]  # no temp folder left behind
    # with an earlier report in place, a failed rebuild leaves it untouched
    bad.write_bytes(good)
    before = (build_report(copy) / "metrics.json").read_bytes()
    bad.write_bytes(b"garbage")
    with pytest.raises(UserError, match=re.escape(str(bad))):
        build_report(copy)
    assert (copy / "report" / "metrics.json").read_bytes() == before


def _chromium() -> str | None:
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="chromium not installed (.ci/run installs it)")
def test_html_renders_in_headless_chromium_with_every_figure_loaded(report, tmp_path):
    """Load the page in a real browser; a probe script counts images that decoded
    (naturalWidth > 0)."""
    import re
    import subprocess

    page = (report / "report.html").read_text()
    probe = (
        "<script>window.addEventListener('load',()=>{const im=[...document.images];"
        "document.title='IMAGES '+im.filter(i=>i.complete&&i.naturalWidth>0).length+'/'+im.length+"
        "' TABLES '+document.querySelectorAll('table').length+"
        "' OVERFLOW '+(document.documentElement.scrollWidth>window.innerWidth?1:0);});</script>"
    )
    probed = tmp_path / "probe.html"
    probed.write_text(page.replace("</body>", probe + "</body>"))
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
        "--window-size=1400,1000",
        "--dump-dom",
        probed.as_uri(),
    ]
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120).stdout
    m = re.search(r"IMAGES (\d+)/(\d+) TABLES (\d+) OVERFLOW (\d)", out)
    assert m, out[:2000]
    loaded, total, tables, overflow = map(int, m.groups())
    assert total >= 4 and loaded == total
    assert tables >= 4
    assert overflow == 0, "the page is wider than a 1400-px window: a table overflows it"
    shot = tmp_path / "shot.png"
    subprocess.run(
        cmd[:-3]
        + [f"--screenshot={shot}", "--window-size=1400,2400", (report / "report.html").as_uri()],
        check=False,
        capture_output=True,
        timeout=120,
    )
    assert shot.is_file() and shot.stat().st_size > 20_000  # a rendered page, not a blank one


def test_export_is_weights_free_and_regenerates_same_numbers(study, report, tmp_path):
    from robust_compress.report import export_study

    dest = export_study(study, tmp_path / "exported")
    assert not list(dest.rglob("*.safetensors"))
    a = json.loads((report / "metrics.json").read_text())
    b = json.loads((dest / "report" / "metrics.json").read_text())

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "path"} for r in rows]

    # the export stores probabilities as float32: numbers agree far below report precision
    ra, rb = strip(a["rows"]), strip(b["rows"])
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], float):
                assert y[k] == pytest.approx(x[k], rel=1e-5, abs=1e-6, nan_ok=True), k
            else:
                assert y[k] == x[k], k


def test_a_second_named_split_of_one_dev_set(study, tmp_path):
    """`easy_hard/<split>.<name>.parquet` (a second bias model's split, e.g. lexical overlap) gets
    its own metrics, table and figure beside the study's split, computed on the same prediction
    table."""
    import shutil

    from robust_compress.report import build_report

    s2 = tmp_path / "two-splits"
    shutil.copytree(study, s2)
    flipped = pd.read_parquet(s2 / "easy_hard" / "dev_matched.parquet")
    flipped["easy"] = ~flipped["easy"]
    flipped.to_parquet(s2 / "easy_hard" / "dev_matched.overlap.parquet", index=False)
    out = build_report(s2)
    rows = [
        r for r in json.loads((out / "metrics.json").read_text())["rows"] if r["level"] == "run"
    ]
    for r in rows:  # the flipped split swaps easy and hard: the gap changes sign exactly
        assert r["eh.dev_matched.overlap.gap"] == pytest.approx(-r["eh.dev_matched.gap"], abs=1e-12)
        assert r["eh.dev_matched.overlap.n_easy"] == r["eh.dev_matched.n_hard"]
    md = (out / "report.md").read_text()
    assert "Easy / hard examples of dev_matched, split by overlap" in md
    assert (out / "figures" / "easy_hard_gap_dev_matched.overlap.png").is_file()


def test_f_bias_pairs_the_teacher_with_the_runs_examples(study, tmp_path):
    """A compressed run scored on a subset (a study's eval_limit) is compared with the teacher's Δ
    on that same subset, not on the teacher's full sets."""
    import shutil

    from robust_compress.report import build_report

    s2 = tmp_path / "subset"
    shutil.copytree(study, s2)
    index = json.loads((s2 / "index.json").read_text())
    run, teacher = (
        next(e for e in index if not e["is_teacher"]),
        next(e for e in index if e["is_teacher"]),
    )
    for split in ("dev_matched", "hans"):
        path = s2 / run["path"] / "predictions" / f"{split}.parquet"
        pd.read_parquet(path).iloc[::3].to_parquet(path, index=False)
    out = build_report(s2)
    got = next(
        r
        for r in json.loads((out / "metrics.json").read_text())["rows"]
        if r["level"] == "run" and r["name"] == run["name"]
    )
    dev, hans = _preds(s2, run, "dev_matched"), _preds(s2, run, "hans")
    tdev, thans = _preds(s2, teacher, "dev_matched"), _preds(s2, teacher, "hans")
    tdev, thans = tdev[tdev["id"].isin(dev["id"])], thans[thans["id"].isin(hans["id"])]

    def delta(a, b):
        return (a["correct"].mean() - b["correct"].mean()) / a["correct"].mean()

    assert len(tdev) == len(dev) < 100
    assert got["f_bias"] == pytest.approx(delta(dev, hans) / delta(tdev, thans), abs=1e-12)
    full_t = delta(_preds(s2, teacher, "dev_matched"), _preds(s2, teacher, "hans"))
    assert got["f_bias"] != pytest.approx(
        delta(dev, hans) / full_t, abs=1e-6
    )  # not the full-set teacher


def test_summary_says_what_compression_cost_and_what_each_loss_won_back(study, report):
    """The opening summary: differences computed from the same runs as the tables, in words."""
    rows = {
        (r["level"], r["name"]): r
        for r in json.loads((report / "metrics.json").read_text())["rows"]
    }
    md = (report / "report.md").read_text()
    assert "## Summary: what compression cost, what each loss won back" in md
    van, teacher = rows[("group", "magnitude-0.40/ce")], rows[("group", "teacher")]
    cost = 100 * (van["acc_id"] - teacher["acc_id"])
    assert f"magnitude-0.40 (Vanilla, 2 seeds) vs the teacher: ID accuracy {cost:+.1f} [" in md
    rmc = rows[("group", "magnitude-0.40/rmc")]
    gain = 100 * (rmc["acc_id"] - van["acc_id"])
    line = next(
        x
        for x in md.splitlines()
        if x.startswith("    - rmc at magnitude-0.40 (2 seeds), vs Vanilla:")
    )
    assert f"ID accuracy {gain:+.1f}" in line
    # the gap: the fixture's Vanilla widens it against the teacher, so the line says what RMC
    # recovered
    gap_cost = van["eh.dev_matched.gap"] - teacher["eh.dev_matched.gap"]
    cost_line = next(
        x for x in md.splitlines() if "magnitude-0.40 (Vanilla, 2 seeds) vs the teacher" in x
    )
    lo, _hi = (
        float(v)
        for v in re.search(
            r"easy−hard gap [+-][\d.]+ \[([+-][\d.]+), ([+-][\d.]+)\]", cost_line
        ).groups()
    )
    # a measurable cost: the RMC line says how much of it RMC recovered (or that it recovered none)
    if lo > 0:
        assert f"the {100 * gap_cost:.1f}-point easy−hard gap cost" in line
    else:  # no measurable cost: never "recovers x of the cost"
        assert "no measurable easy−hard gap cost to recover" in line and "gap cost (" not in line


def test_collapsed_rows_are_marked_and_left_out_of_trend_lines(study, tmp_path):
    """A run predicting one class on its ID split is not read as a model: its Δ, F_bias and gap say
    'collapsed — not read', and the figures' lines skip it."""
    import shutil

    s2 = tmp_path / "collapsed"
    shutil.copytree(study, s2, ignore=shutil.ignore_patterns("report"))
    index = json.loads((s2 / "index.json").read_text())
    for e in index:
        if e["group"] == "magnitude-0.70" and e["loss"] == "ce":
            for split in ("dev_matched", "hans"):
                p = s2 / e["path"] / "predictions" / f"{split}.parquet"
                df = pd.read_parquet(p)
                label = df["gold"].mode()[0] if split == "hans" else "neutral"
                df["pred"] = label
                df["correct"] = df["gold"] == label
                df.to_parquet(p, index=False)
    out = build_report(s2)
    md = (out / "report.md").read_text()
    row = next(
        x for x in md.split("## Table 2")[1].splitlines() if x.startswith("| magnitude-0.70/ce ⚠ |")
    )
    assert row.count("collapsed — not read") == 2  # Δ and F_bias
    for table in ("## Table 3", "## Table 4"):  # marked in every table, not only Table 1
        assert "| magnitude-0.70/ce ⚠ |" in md.split(table)[1].split("\n## ")[0]
    assert "⚠ collapsed: predicts one class" in md
    assert (
        "magnitude-0.70 (Vanilla, 2 seeds): collapsed — not read (one class on 100% of dev_matched)"
        in md
    )
    assert "collapsed rows left out: magnitude-0.70/ce" in md
    rows = {
        (r["level"], r["name"]): r for r in json.loads((out / "metrics.json").read_text())["rows"]
    }
    assert rows[("group", "magnitude-0.70/ce")]["collapsed"] == 1.0
    assert rows[("group", "magnitude-0.70/rmc")]["collapsed"] == 0.0


def _part(study: Path, dest: Path, keep) -> Path:
    """A copy of `study` holding only the index entries `keep` accepts (a shard run elsewhere)."""
    import shutil

    shutil.copytree(study, dest)
    index = [e for e in json.loads((dest / "index.json").read_text()) if keep(e)]
    for e in index:  # the teacher's absolute path points into the original study
        e["path"] = (
            str(Path(e["path"]).relative_to(study)) if Path(e["path"]).is_absolute() else e["path"]
        )
    (dest / "index.json").write_text(json.dumps(index))
    return dest


def test_merging_two_exports_gives_the_whole_study(study, tmp_path):
    """Rows added to a study later (or a shard run on another machine) join its committed export;
    the merged report is the one-piece export's, and a run both hold is checked to be the same."""
    from robust_compress.report import export_study, merge_export

    whole = export_study(study, tmp_path / "whole")
    low = _part(study, tmp_path / "low", lambda e: e.get("sparsity") in (None, 0.4))
    high = _part(study, tmp_path / "high", lambda e: e.get("sparsity") in (None, 0.7))
    merged = export_study(low, tmp_path / "merged")
    added, same = merge_export(high, merged)
    assert same == ["teacher"] and len(added) == 4 and all("0.70" in a for a in added)

    def rows(d):
        m = json.loads((d / "report" / "metrics.json").read_text())["rows"]
        return {r["name"]: {k: v for k, v in r.items() if k != "path"} for r in m}

    assert rows(merged) == rows(whole)
    assert (merged / "speed.json").is_file()  # the export's own files stay
    # the command: a second merge of the same runs adds nothing; --merge alone is a user error
    from .test_trust import cli

    r = cli("report", str(high), "--export", str(merged), "--merge")
    assert r.returncode == 0 and "0 run(s) added, 5 held by both" in r.stdout, r.stderr[-2000:]
    assert rows(merged) == rows(whole)
    r = cli("report", str(high), "--merge")
    assert r.returncode == 2 and "needs --export" in r.stderr and "Traceback" not in r.stderr


def test_a_merge_refuses_a_different_run_under_the_same_name(study, tmp_path):
    from robust_compress.io import UserError
    from robust_compress.report import export_study, merge_export

    dest = export_study(study, tmp_path / "dest")
    other = _part(study, tmp_path / "other", lambda e: True)
    p = other / "artifacts" / "compress-1" / "predictions" / "dev_matched.parquet"
    df = pd.read_parquet(p)
    df.loc[0, [c for c in df.columns if c.startswith("p_")][0]] = 0.123
    df.to_parquet(p, index=False)
    before = (dest / "report" / "metrics.json").read_text()
    with pytest.raises(UserError, match="magnitude-0.40/ce/seed1.*differ"):
        merge_export(other, dest)
    assert (dest / "report" / "metrics.json").read_text() == before  # untouched
    flipped = _part(study, tmp_path / "flipped", lambda e: "0.70" in e["name"])
    eh = pd.read_parquet(flipped / "easy_hard" / "dev_matched.parquet")
    eh["easy"] = ~eh["easy"]
    eh.to_parquet(flipped / "easy_hard" / "dev_matched.parquet", index=False)
    with pytest.raises(UserError, match="easy_hard/dev_matched.parquet"):
        merge_export(flipped, dest)


def test_a_merge_adds_the_easy_hard_folder_an_export_lacks(study, tmp_path):
    """Issue 28: a study with a bias model merged into an export without `easy_hard/` (one exported
    before any bias model ran). Before: ENOENT on a temporary path."""
    import shutil

    from robust_compress.report import export_study, merge_export

    plain = _part(study, tmp_path / "plain", lambda e: e.get("sparsity") in (None, 0.4))
    shutil.rmtree(plain / "easy_hard")
    dest = export_study(plain, tmp_path / "dest")
    assert not (dest / "easy_hard").exists()
    high = _part(study, tmp_path / "high", lambda e: e.get("sparsity") in (None, 0.7))
    added, same = merge_export(high, dest)
    assert len(added) == 4 and same == ["teacher"]
    assert pd.read_parquet(dest / "easy_hard" / "dev_matched.parquet").equals(
        pd.read_parquet(study / "easy_hard" / "dev_matched.parquet")
    )
