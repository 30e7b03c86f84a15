"""Issue 28: nothing a user owns is lost. Model cards never replace a README.md the user wrote, name
the task and sets they were measured on, and escape user strings; `audit` shows what it measured,
works on `.` and `..`, and never writes a cache into an audited model."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard

from robust_compress.config import RunConfig
from robust_compress.io import UserError
from robust_compress.stages import audit
from robust_compress.stages.audit import format_audit_table
from robust_compress.stages.card import CARD, SIDE_CARD, build_card, card_path, write_card

from .conftest import tiny_run_config

MARKUP = "<script>alert(1)</script> a|b `c` <!-- open"


def _copy(written, key, tmp_path, name=None):
    return shutil.copytree(written[key], tmp_path / "models" / (name or written[key].name))


def _cfg(written, tmp_path, task=None, **kw):
    return tiny_run_config(written["teacher"], task or written["task"], tmp_path / "x", **kw)


def _task_variant(written, tmp_path, name: str, kind: str | None = None, ood: bool = True):
    """The shared tiny task under another name (and its OOD set's `kind` values renamed)."""
    spec = yaml.safe_load(written["task"].read_text())
    spec["name"] = name
    if not ood:
        del spec["splits"]["ood"]
    elif kind is not None:
        src = spec["splits"]["ood"]["local"][0]
        rows = [json.loads(x) for x in Path(src).read_text().splitlines()]
        dst = tmp_path / "ood.jsonl"
        dst.write_text("".join(json.dumps(r | {"kind": kind + r["kind"]}) + "\n" for r in rows))
        spec["splits"]["ood"]["local"] = [str(dst)]
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


# ------------------------------------------------------------------ whose README.md is it


def test_a_card_the_tool_wrote_is_recognised_and_an_edited_one_is_the_users(written, tmp_path):
    m = _copy(written, "teacher", tmp_path)
    assert card_path(m) == m / CARD  # the card the tool wrote: replaced
    own = (m / CARD).read_text()
    (m / CARD).write_text(own + "\nMy own notes on this model.\n")  # edited: now the user's
    assert card_path(m) == m / SIDE_CARD
    (m / CARD).write_text("# My model\n\nTrained by hand.\n")
    assert card_path(m) == m / SIDE_CARD
    legacy = re.sub(r"^<!-- written by robust-compress[^\n]*-->\n", "", own, flags=re.M)
    assert legacy != own
    (m / CARD).write_text(legacy)  # a card of an earlier version, without the marker: the tool's
    assert card_path(m) == m / CARD
    (m / CARD).write_text("# Mine\n")
    (m / SIDE_CARD).write_text("# Also mine\n")
    with pytest.raises(UserError, match="MODEL_CARD.md"):
        card_path(m)
    (m / CARD).unlink()
    assert card_path(m) == m / CARD


def test_audit_write_card_keeps_the_users_readme(written, tmp_path):
    m = _copy(written, "teacher", tmp_path)
    mine = "---\nlicense: mit\n---\n# My model\n\nWords the user wrote.\n"
    (m / CARD).write_text(mine)
    cfg = _cfg(written, tmp_path)
    for i in range(2):  # the second audit replaces its own MODEL_CARD.md
        result = audit(
            [str(m)],
            cfg,
            tmp_path / f"a{i}",
            bias=str(written["bias"]),
            write_cards=True,
            speed_examples=0,
        )
        assert (m / CARD).read_text() == mine
        assert result["cards"] == {"teacher": str(m / SIDE_CARD)}
        card = ModelCard.load(m / SIDE_CARD)
        assert card.data.eval_results and "Audited by robust-compress" in card.text
    assert card_path(m) == m / SIDE_CARD


def test_audit_of_a_folder_with_its_own_card_replaces_it(written, tmp_path):
    m = _copy(written, "teacher", tmp_path)
    result = audit(
        [str(m)],
        _cfg(written, tmp_path),
        tmp_path / "a",
        bias=str(written["bias"]),
        write_cards=True,
        speed_examples=0,
    )
    assert result["cards"] == {"teacher": str(m / CARD)} and not (m / SIDE_CARD).exists()
    assert "Audited by robust-compress" in ModelCard.load(m / CARD).text


# ------------------------------------------------------------------ the card names what it measured


def test_the_card_names_the_audited_task_not_the_training_one(written, tmp_path):
    m = _copy(written, "teacher", tmp_path)
    run = yaml.safe_load((m / "run_config.yaml").read_text())
    (m / "run_config.yaml").write_text(yaml.safe_dump(run | {"task": "mnli"}))
    task = _task_variant(written, tmp_path, "my-nli")
    audit(
        [str(m)],
        _cfg(written, tmp_path, task),
        tmp_path / "a",
        bias=str(written["bias"]),
        write_cards=True,
        speed_examples=0,
    )
    card = ModelCard.load(m / CARD)
    results = card.data.eval_results
    assert {(r.dataset_name, r.dataset_split) for r in results} == {
        ("my-nli dev", "dev"),
        ("my-nli ood", "ood"),
    }
    assert all("mnli" not in r.dataset_name and r.dataset_type == "my-nli" for r in results)
    assert "my-nli" in card.data.tags


# ------------------------------------------------------------------ user strings are escaped


def test_user_strings_are_escaped_in_the_card_and_the_report(written, tmp_path):
    from robust_compress.report import build_report

    m = _copy(written, "teacher", tmp_path)
    task = _task_variant(written, tmp_path, MARKUP, kind=MARKUP)
    out = tmp_path / "a"
    audit(
        [str(m)],
        _cfg(written, tmp_path, task),
        out,
        bias=str(written["bias"]),
        write_cards=True,
        speed_examples=0,
    )
    text = (m / CARD).read_text()
    head, body = text.split("\n---\n", 1)
    meta = yaml.safe_load(head.removeprefix("---\n"))
    assert meta["model-index"][0]["results"][0]["task"]["name"].startswith(MARKUP)  # data, quoted
    assert "<script>" not in body and "`c`" not in body
    assert [
        x for x in re.findall(r"<!--[^\n]*", body) if "written by robust-compress" not in x
    ] == []
    rows = [x for x in body.splitlines() if x.startswith("|")]
    assert rows and len({len(re.findall(r"(?<!\\)\|", x)) for x in rows}) == 1  # no extra cell
    assert "## How it was made" in ModelCard.load(m / CARD).text  # nothing hidden after the name
    report = build_report(out)
    page = (report / "report.html").read_text()
    assert "<script>alert" not in page and "<!-- open" not in page
    md = (report / "report.md").read_text()
    md_rows = [x for x in md.splitlines() if "alert(1)" in x]
    assert md_rows and all("&lt;script&gt;" in x and "a\\|b" in x for x in md_rows)
    assert "<!-- open" not in md


def test_build_card_escapes_a_name_and_a_note(tmp_path):
    card = build_card("<!-- x|y", note=None)
    assert "<!--" not in card.text.split("\n", 3)[-1] and "&lt;!-- x\\|y" in card.text
    path = write_card(tmp_path, card)
    assert card_path(tmp_path) == path  # written by the tool: replaced next time


# ------------------------------------------------------------------ the audit table


def test_audit_without_an_ood_set_shows_what_it_measured(written, tmp_path):
    task = _task_variant(written, tmp_path, "no-ood", ood=False)
    result = audit(
        [str(_copy(written, "teacher", tmp_path))],
        _cfg(written, tmp_path, task),
        tmp_path / "a",
        bias=str(written["bias"]),
        speed_examples=0,
    )
    row = result["models"][0]
    assert row["acc_id"] is not None and row["ece_id"] is not None and "easy_acc" in row
    assert row["acc_ood"] is None and row["delta"] is None
    table = format_audit_table(result)
    line = next(x for x in table.splitlines() if x.startswith("teacher"))
    cells = line.split()
    assert cells[1] == f"{100 * row['acc_id']:.1f}" and cells[5] == f"{row['ece_id']:.3f}"
    assert cells[6] == f"{100 * row['easy_acc']:.1f}" and cells[7] == f"{100 * row['hard_acc']:.1f}"
    assert cells[2:5] == ["–", "–", "–"] and cells[8:10] == ["–", "–"] and "nan" not in table
    from robust_compress.report import build_report

    assert (build_report(tmp_path / "a") / "report.html").is_file()  # what the command does next


def test_format_audit_table_shows_speed_and_collapse():
    result = {
        "models": [
            {
                "name": "ref",
                "acc_id": 0.8,
                "acc_ood": 0.6,
                "delta": 0.25,
                "f_bias": 1.0,
                "ece_id": 0.05,
                "easy_acc": 0.9,
                "hard_acc": 0.5,
                "examples_per_s": 120.0,
                "speedup": 1.0,
            },
            {
                "name": "small",
                "acc_id": 0.4,
                "acc_ood": 0.5,
                "delta": -0.25,
                "f_bias": None,
                "ece_id": 0.2,
                "examples_per_s": 240.0,
                "speedup": 2.0,
                "collapsed": True,
            },
        ]
    }
    lines = format_audit_table(result).splitlines()
    assert lines[0].split()[:3] == ["model", "ID", "OOD"] and len(lines) == 3
    assert " ".join(lines[1].split()) == "ref 80.0 60.0 0.250 1.00 0.050 90.0 50.0 120.0 1.00x"
    assert " ".join(lines[2].split()) == "small 40.0 50.0 -0.250 – 0.200 – – 240.0 2.00x collapsed"


# ------------------------------------------------------------------ audit . and audit ..


def _default_cache_cfg(written, tmp_path):
    data = _cfg(written, tmp_path).model_dump(mode="json", exclude_unset=True)
    data.pop("cache_dir")
    cfg = RunConfig.model_validate(data)
    assert "cache_dir" not in cfg.model_fields_set
    return cfg


def _no_tmp(*folders):
    return [p for f in folders for p in f.rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.name]


def test_audit_dot_names_the_folder_and_writes_no_cache_into_it(written, tmp_path, monkeypatch):
    m = _copy(written, "teacher", tmp_path, "my-model")
    before = sorted(p.relative_to(m) for p in m.rglob("*"))
    monkeypatch.chdir(m)
    out = tmp_path / "a"
    result = audit(["."], _default_cache_cfg(written, tmp_path), out, speed_examples=0)
    assert [r["name"] for r in result["models"]] == ["my-model"]
    assert (out / "models" / "my-model" / "summary.json").is_file()
    assert sorted(p.relative_to(m) for p in m.rglob("*")) == before  # nothing written into it
    assert (out / "cache" / "bias").is_dir()  # the cache follows the audit's output folder
    with pytest.raises(UserError, match="runs/audit"):  # -o runs/audit from inside the model
        audit(["."], _default_cache_cfg(written, tmp_path), "runs/audit", speed_examples=0)
    cfg = _cfg(written, tmp_path, cache_dir=str(m / "cache"))
    with pytest.raises(UserError, match="cache_dir"):
        audit(["."], cfg, tmp_path / "b", speed_examples=0)
    assert sorted(p.relative_to(m) for p in m.rglob("*")) == before


def test_audit_dotdot_works_and_leaves_no_tmp(written, tmp_path, monkeypatch):
    m = _copy(written, "teacher", tmp_path, "parent-model")
    (m / "sub").mkdir()
    monkeypatch.chdir(m / "sub")
    out = tmp_path / "a"
    result = audit(
        [".."], _cfg(written, tmp_path), out, bias=str(written["bias"]), speed_examples=0
    )
    assert [r["name"] for r in result["models"]] == ["parent-model"]
    assert (out / "models" / "parent-model" / "summary.json").is_file()
    assert not _no_tmp(tmp_path)
