"""Issue 28, items 3 and 4: scoring that cannot be silently wrong (a classifier folder without its
head tensors, an explicit label_map) and inputs that used to end in a traceback, each now one
`error:` line naming the file and the key, exit 2, before any work and with nothing written."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file, save_file

from robust_compress.io import UserError, read_yaml
from robust_compress.models.labels import align

from .conftest import LABELS, make_examples, tiny_run_config
from .test_trust import cli

SWAP = {"entailment": "contradiction", "contradiction": "entailment"}


def one_error_line(r, match: str) -> None:
    """Exit 2, one `error:` line matching `match`, no traceback."""
    import re

    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-3000:]
    assert re.search(match, lines[0]), lines[0]


def _copy(src: Path, dst: Path, **config) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps(cfg | config))
    return dst


@pytest.fixture
def headless(tiny_dir, tmp_path) -> Path:
    """A folder whose config.json says BertForSequenceClassification with an id2label, but whose
    weights lack the head (classifier.*)."""
    d = _copy(tiny_dir, tmp_path / "headless")
    state = load_file(str(d / "model.safetensors"))
    save_file(
        {k: v for k, v in state.items() if not k.startswith("classifier.")},
        str(d / "model.safetensors"),
        metadata={"format": "pt"},
    )
    return d


# --------------------------------------------------------------- 3. a classifier without its head

HEADLESS = (
    r"headless/model\.safetensors: no classifier head "
    r"\(missing classifier\.weight, classifier\.bias\)"
)


def test_a_classifier_config_without_its_head_tensors_is_refused(headless, tiny_task, tmp_path):
    """Before: scored with a random head, exit 0."""
    out = tmp_path / "e"
    r = cli("evaluate", str(headless), "--task", str(tiny_task), "-o", str(out))
    one_error_line(r, HEADLESS + r".*--new-head")
    assert not out.exists()
    r = cli("evaluate", str(headless), "--task", str(tiny_task), "-o", str(out), "--new-head")
    assert r.returncode == 0, r.stderr[-3000:]  # on purpose: still possible
    assert (out / "summary.json").is_file()


def test_a_headless_classifier_is_refused_wherever_it_would_be_scored(
    headless, tiny_dir, tiny_task, tmp_path
):
    """audit, the one inference loader (a teacher's or bias model's logits) and compress's
    preflight of its teacher; the tool's own int8 folders (flattened tensor names) pass."""
    from robust_compress.models.load import check_head, load_model, load_tokenizer
    from robust_compress.models.quantized import load_for_inference, quantize, save_quantized
    from robust_compress.stages import audit
    from robust_compress.stages.artifact import check_inputs
    from robust_compress.train.logit_cache import LogitCache

    cfg = tiny_run_config(tiny_dir, tiny_task, tmp_path / "x")
    with pytest.raises(UserError, match=HEADLESS):
        audit([str(tiny_dir), str(headless)], cfg, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    with pytest.raises(UserError, match=HEADLESS):
        load_for_inference(headless, LABELS)
    with pytest.raises(UserError, match=HEADLESS):
        LogitCache(tmp_path / "cache").get(headless, make_examples(8), 32)
    kd = tiny_run_config(
        tiny_dir,
        tiny_task,
        tmp_path / "x",
        loss={"name": "distil"},
        inputs={"teacher": str(headless)},
    )
    with pytest.raises(UserError, match=HEADLESS):
        check_inputs(kd, LABELS)
    model = load_model(str(tiny_dir), LABELS)
    save_quantized(
        quantize(model), model, load_tokenizer(str(tiny_dir)), tmp_path / "q", "dynamic-int8"
    )
    check_head(tmp_path / "q")  # classifier.weight is stored flattened (int8 data + scales)


# ------------------------------------------------------------ 3. an explicit label_map is applied


def test_an_explicit_label_map_is_applied_even_to_a_model_in_the_tasks_order():
    """Before: ignored when the names already matched the task's (identity), applied to a model in
    another order."""
    assert align(LABELS, LABELS, SWAP) == [2, 1, 0]
    assert align(["contradiction", "entailment", "neutral"], LABELS, SWAP) == [0, 2, 1]
    assert align(["ENTAILMENT", "NEUTRAL", "CONTRADICTION"], LABELS, SWAP) == [2, 1, 0]  # any case
    assert align(
        ["LABEL_0", "LABEL_1", "LABEL_2"],
        LABELS,
        {"0": "neutral", "1": "entailment", "2": "contradiction"},
    ) == [1, 0, 2]  # indices
    with pytest.raises(UserError, match="no single model label means 'entailment'"):
        align(LABELS, LABELS, {"entailment": "contradiction"})  # a half map: refused, not ignored


def test_a_label_map_for_other_models_is_said_out_loud(caplog):
    """A map naming none of a model's labels (one audit, several models) leaves a model whose names
    match on their own alone, with a warning naming it: a typo is not silently ignored."""
    with caplog.at_level(logging.WARNING, logger="robust_compress"):
        assert align(LABELS, LABELS, {"entailmnet": "contradiction"}, where="m1") == [0, 1, 2]
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(msgs) == 1 and "m1" in msgs[0] and "entailmnet" in msgs[0], msgs


def test_evaluate_applies_the_label_map_and_a_model_made_with_it_is_not_mapped_twice(
    tiny_dir, tiny_task, tmp_path
):
    from robust_compress.models.load import label_order
    from robust_compress.stages import evaluate_folder

    evaluate_folder(tiny_dir, tiny_run_config(tiny_dir, tiny_task, tmp_path / "x"), tmp_path / "a")
    evaluate_folder(
        tiny_dir,
        tiny_run_config(tiny_dir, tiny_task, tmp_path / "x", label_map=SWAP),
        tmp_path / "b",
    )
    a, b = (pd.read_parquet(tmp_path / d / "predictions" / "dev.parquet") for d in "ab")
    np.testing.assert_allclose(a["p_entailment"], b["p_contradiction"], atol=1e-6)
    np.testing.assert_allclose(a["p_contradiction"], b["p_entailment"], atol=1e-6)
    # a model this tool wrote from a run with this very map: the map was applied to its start model
    # then, and its id2label is the task's since; applying it again would swap it back
    made = _copy(tiny_dir, tmp_path / "made")
    (made / "run_config.yaml").write_text(f"model: {tiny_dir}\nlabel_map: {json.dumps(SWAP)}\n")
    assert label_order(made, LABELS, SWAP) == [0, 1, 2]
    assert label_order(made, LABELS, {"neutral": "neutral", **SWAP}) == [2, 1, 0]  # another map


# ------------------------------------------------------------- 4. model folders: evaluate and audit


@pytest.mark.parametrize(
    "bad,match",
    [
        ("unknown-type", r"config\.json: .*model_type 'nope'"),
        ("no-type", r"config\.json: no model_type"),
        ("list", r"config\.json: expected a JSON object, got a list"),
        ("id2label-str", r"config\.json: id2label is a string, not a mapping"),
        ("auto-map", r"config\.json: auto_map names the model's own code"),
    ],
)
@pytest.mark.parametrize("command", ["audit", "evaluate"])
def test_a_broken_config_json_is_one_line_in_audit_and_evaluate(
    command, bad, match, tiny_dir, tiny_task, tmp_path
):
    """audit loaded the config with AutoConfig directly (tracebacks); evaluate now checks a model
    the same way (one function), before any data is read."""
    d = tmp_path / "m"
    shutil.copytree(tiny_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    change = {
        "unknown-type": lambda c: c | {"model_type": "nope"},
        "no-type": lambda c: {k: v for k, v in c.items() if k != "model_type"},
        "list": lambda c: [c],
        "id2label-str": lambda c: c | {"id2label": "abc"},
        "auto-map": lambda c: (
            c
            | {
                "auto_map": {
                    "AutoModelForSequenceClassification": "modeling_x.XForSequenceClassification"
                }
            }
        ),
    }[bad]
    (d / "config.json").write_text(json.dumps(change(cfg)))
    out = tmp_path / "out"
    args = [command, str(d), "--task", str(tiny_task), "-o", str(out)]
    r = cli(*args, *(["--examples", "0"] if command == "audit" else []))
    one_error_line(r, match)
    assert not out.exists()


# ------------------------------------------------------------------------------ 4. YAML nested deep


def _deep(path: Path, flow: bool) -> Path:
    n = 5000
    if flow:
        path.write_text("model: " + "[" * n + "]" * n + "\n")
    else:
        path.write_text("".join("  " * i + f"k{i}:\n" for i in range(n)) + "  " * n + "x: 1\n")
    return path


@pytest.mark.parametrize("flow", [True, False], ids=["flow", "block"])
def test_deeply_nested_yaml_is_one_line(tmp_path, flow):
    with pytest.raises(UserError, match=r"deep\.yaml:\d+: YAML nested deeper than 100 levels"):
        read_yaml(_deep(tmp_path / "deep.yaml", flow))
    (tmp_path / "ok.yaml").write_text("a: " + "[" * 50 + "1" + "]" * 50 + "\n")
    assert read_yaml(tmp_path / "ok.yaml")["a"]  # a sane depth still reads


@pytest.mark.parametrize("flag", ["-c", "--task"])
def test_deeply_nested_yaml_on_the_command_line(flag, tiny_dir, tmp_path):
    """Before: RecursionError with a traceback from `-c` and `--task`."""
    deep = _deep(tmp_path / "deep.yaml", flow=True)
    out = tmp_path / "out"
    r = cli("finetune", "--model", str(tiny_dir), flag, str(deep), "-o", str(out))
    one_error_line(r, r"deep\.yaml:\d+: YAML nested deeper than 100 levels")
    assert not out.exists()


# ------------------------------------------------------------------- 4. a report label with a `$`

ODD = r"$\foo{$"


def _study(tmp_path: Path, name: str = "teacher2") -> Path:
    """A study folder (a teacher and two pruned runs, their prediction tables) named `name`."""
    from .test_report import HANS, MNLI, N_DEV, N_HANS, _table

    rng = np.random.default_rng(0)
    study = tmp_path / "study"
    entries = [
        {
            "name": "teacher",
            "path": "t",
            "group": "teacher",
            "method": "teacher",
            "loss": "ce",
            "seed": 1,
            "is_teacher": True,
        }
    ]
    for sp in (0.4, 0.7):
        entries.append(
            {
                "name": f"{name}-{sp}",
                "path": f"r{sp}",
                "group": f"{name} {sp}",
                "method": name,
                "loss": r"$\bar{$" if name == ODD else "ce",
                "seed": 1,
                "is_teacher": False,
                "sparsity": sp,
            }
        )
    for e in entries:
        pred = study / e["path"] / "predictions"
        pred.mkdir(parents=True)
        _table(rng, MNLI, N_DEV, 0.8).to_parquet(pred / "dev.parquet")
        _table(rng, HANS, N_HANS, 0.6).to_parquet(pred / "hans.parquet")
        (study / e["path"] / "summary.json").write_text(
            json.dumps(
                {"splits": {"dev": {"role": "id"}, "hans": {"role": "ood"}}, "id_split": "dev"}
            )
        )
        total = 1_000_000
        kept = int(total * (1 - e.get("sparsity", 0)))
        (study / e["path"] / "compression.json").write_text(
            json.dumps({"method": e["method"], "parameters": total, "nonzero_parameters": kept})
        )
    (study / "index.json").write_text(json.dumps(entries))
    rates = {e["name"]: 100.0 * (i + 1) for i, e in enumerate(entries)}
    (study / "speed.json").write_text(json.dumps({"examples_per_s": rates}))
    (study / "easy_hard").mkdir()
    easy = pd.DataFrame({"id": [f"x{i}" for i in range(N_DEV)], "easy": rng.random(N_DEV) < 0.5})
    easy.to_parquet(study / "easy_hard" / "dev.parquet")
    return study


def test_a_label_with_dollars_is_plain_text_in_every_figure(tmp_path):
    """Before: matplotlib parsed `$\\foo{$` as mathtext and raised after the whole study had run,
    and `report` failed the same way."""
    study = _study(tmp_path, ODD)
    r = cli("report", str(study))
    assert r.returncode == 0, r.stderr[-3000:]
    figures = sorted(p.name for p in (study / "report" / "figures").glob("*.png"))
    assert {"accuracy_vs_sparsity.png", "reliability.png", "speed_robustness.png"} <= set(figures)
    assert any(n.startswith("easy_hard_gap") for n in figures), figures


def test_figure_text_shows_a_dollar_label_as_written():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from robust_compress.report.figures import speed_figure

    g = {"acc_id": 0.8, "acc_ood": 0.6, "speedup": 1.0, "n_seeds": 1}
    fig = speed_figure({"teacher": g, ODD: g | {"speedup": 2.0, "acc_id": 0.7}}, [])
    FigureCanvasAgg(fig).draw()  # before: ValueError from mathtext
    shown = [t for t in fig.findobj(lambda a: hasattr(a, "get_text")) if "foo" in t.get_text()]
    assert shown and all(t._preprocess_math(t.get_text()) == (ODD, False) for t in shown)


# ---------------------------------------------------------------------------- 4. the logit cache


def test_a_logit_cache_entry_with_the_wrong_row_count_is_recomputed(tmp_path, tiny_dir, caplog):
    """The cache's rule for an entry it cannot use (it is only a cache; the key hashes the data, so
    a wrong row count is a damaged file, not another data set): one warning naming the file and
    the rows expected and found, removed, recomputed. Before: a shape error deep in training."""
    from robust_compress.train.logit_cache import LogitCache

    cache, ex = LogitCache(tmp_path / "cache"), make_examples(24)
    first = cache.get(tiny_dir, ex, 32)
    (entry,) = (tmp_path / "cache" / "logits").glob("*.safetensors")
    from safetensors.numpy import save_file as save_np

    save_np({"logits": first[:5]}, str(entry))
    with caplog.at_level(logging.WARNING, logger="robust_compress"):
        again = cache.get(tiny_dir, ex, 32)
    np.testing.assert_array_equal(again, first)
    assert cache.misses == 2
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(msgs) == 1 and entry.name in msgs[0], msgs
    assert "24 x 3" in msgs[0] and "5 x 3" in msgs[0] and "recomput" in msgs[0]


# ------------------------------------------------------------------------- 4. evaluate --reference


@pytest.mark.parametrize(
    "content,match",
    [
        ({"splits": {"dev": {"role": "id"}}, "delta": "big"}, r"ref\.json: delta: "),
        ([1, 2], r"ref\.json: .*valid dictionary"),
        (None, r"ref\.json: file not found \(--reference\)"),
    ],
    ids=["string-delta", "list", "missing"],
)
def test_a_bad_reference_is_one_line_before_any_work(content, match, tiny_dir, tiny_task, tmp_path):
    """Read through its schema (Summary); a missing file is refused, not silently ignored."""
    ref = tmp_path / "ref.json"
    if content is not None:
        ref.write_text(json.dumps(content))
    out = tmp_path / "e"
    r = cli(
        "evaluate", str(tiny_dir), "--task", str(tiny_task), "-o", str(out), "--reference", str(ref)
    )
    one_error_line(r, match)
    assert not out.exists()


# -------------------------------------------------------------------------- 4. report --merge


def test_merging_into_an_export_whose_index_is_not_a_list_of_runs(tmp_path):
    """Before: TypeError from indexing `1["name"]`. The export is left as it was."""
    from robust_compress.report import merge_export

    dest = tmp_path / "export"
    dest.mkdir()
    (dest / "index.json").write_text("[1, 2]")
    (tmp_path / "study").mkdir()
    with pytest.raises(UserError, match=r"export/index\.json: 0: .*valid dictionary"):
        merge_export(tmp_path / "study", dest)
    (dest / "index.json").write_text('{"runs": []}')
    with pytest.raises(UserError, match=r"export/index\.json: expected a non-empty list of runs"):
        merge_export(tmp_path / "study", dest)
    assert sorted(p.name for p in dest.iterdir()) == ["index.json"]


def test_report_merge_into_a_broken_export_is_one_line(tmp_path):
    dest = tmp_path / "export"
    dest.mkdir()
    (dest / "index.json").write_text("[1, 2]")
    r = cli("report", str(_study(tmp_path)), "--export", str(dest), "--merge")
    one_error_line(r, r"export/index\.json: 0: ")
    assert sorted(p.name for p in dest.iterdir()) == ["index.json"]
    assert (dest / "index.json").read_text() == "[1, 2]"
