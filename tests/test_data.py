import json

import numpy as np
import pytest

from robust_compress.data.load import load_split
from robust_compress.data.tasks import BUILTIN, load_task
from robust_compress.io import UserError
from robust_compress.metrics import collapse_probs

from .conftest import DATA, needs_shared

MNLI = BUILTIN["mnli"]


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def _mnli_dir(tmp_path, train_rows):
    _write(tmp_path / "mnli" / "train.jsonl", train_rows)
    return tmp_path


def test_labels_by_name_and_index(tmp_path):
    d = _mnli_dir(
        tmp_path,
        [
            {"premise": "p", "hypothesis": "h", "label": "neutral"},
            {"premise": "p", "hypothesis": "h", "label": 2},
        ],
    )
    split = load_split(MNLI, "train", d)
    assert [e["label"] for e in split.examples] == [1, 2]


def test_malformed_line_names_file_and_line(tmp_path):
    d = _mnli_dir(tmp_path, [{"premise": "p", "hypothesis": "h", "label": "neutral"}, "{not json"])
    with pytest.raises(UserError, match=r"train\.jsonl:2: malformed JSON"):
        load_split(MNLI, "train", d)


def test_unknown_label_names_value_and_line(tmp_path):
    d = _mnli_dir(tmp_path, [{"premise": "p", "hypothesis": "h", "label": "maybe"}])
    with pytest.raises(UserError, match=r"train\.jsonl:1: unknown label 'maybe'"):
        load_split(MNLI, "train", d)


def test_missing_field_and_empty_split(tmp_path):
    d = _mnli_dir(tmp_path, [{"premise": "p", "label": "neutral"}])
    with pytest.raises(UserError, match="missing field 'hypothesis'"):
        load_split(MNLI, "train", d)
    _write(tmp_path / "mnli" / "train.jsonl", [])
    with pytest.raises(UserError, match="is empty"):
        load_split(MNLI, "train", d)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        load_split(MNLI, "dev_matched", tmp_path)


def test_collapse_three_way_to_two_way_sums_probabilities():
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.3, 0.6]])
    two = collapse_probs(
        probs, MNLI.labels, MNLI.splits["hans"].collapse, ["entailment", "non-entailment"]
    )
    np.testing.assert_allclose(two, [[0.5, 0.5], [0.1, 0.9]])
    np.testing.assert_allclose(two.sum(1), 1.0)


def test_custom_task_from_yaml(tmp_path):
    _write(tmp_path / "d" / "tr.jsonl", [{"s1": "a", "s2": "b", "y": 0, "label": "pos"}])
    _write(tmp_path / "d" / "ood.csv", [])
    (tmp_path / "d" / "ood.csv").write_text("s1,s2,label,kind\nx,y,neg,k1\nz,w,pos,k2\n")
    spec = tmp_path / "task.yaml"
    spec.write_text(
        "name: mine\ntext_a: s1\ntext_b: s2\nlabels: [neg, pos]\nsplits:\n"
        "  train: {role: train, local: [d/tr.jsonl]}\n"
        "  stress: {role: ood, local: [d/ood.csv], group_by: [kind]}\n"
    )
    task = load_task(str(spec))
    assert task.eval_splits() == ["stress"]
    ood = load_split(task, "stress", tmp_path)
    assert [(e["label"], e["kind"]) for e in ood.examples] == [(0, "k1"), (1, "k2")]


def test_bad_task_yaml_names_key(tmp_path):
    spec = tmp_path / "task.yaml"
    spec.write_text(
        "name: t\ntext_a: a\ntext_b: b\nlabels: [x, y]\n"
        "splits:\n  dev: {role: id, local: [f.jsonl]}\n"
    )
    with pytest.raises(UserError, match="exactly one split must have role 'train'"):
        load_task(str(spec))


def test_hub_code_path_via_datasets(tmp_path):
    """The hub source is datasets.load_dataset(...); offline we point it at a local JSON file."""
    from robust_compress.data.tasks import HubSource, SplitSpec, TaskSpec

    f = tmp_path / "x.jsonl"
    _write(
        f,
        [
            {"premise": "p", "hypothesis": "h", "label": 0},
            {"premise": "q", "hypothesis": "r", "label": 2},
        ],
    )
    task = TaskSpec(
        name="t",
        text_a="premise",
        text_b="hypothesis",
        labels=MNLI.labels,
        splits={
            "train": SplitSpec(
                role="train", hub=HubSource(path="json", split="train", data_files=str(f))
            )
        },
    )
    split = load_split(task, "train", source="hub")
    assert [e["label"] for e in split.examples] == [0, 2]
    assert split.origin.startswith("hub:json")


@needs_shared
def test_shared_mnli_and_hans_load():
    hans = load_split(MNLI, "hans", DATA, limit=600, seed=1)
    assert len(hans) == 600 and hans.labels == ["entailment", "non-entailment"]
    assert {e["heuristic"] for e in hans.examples} == {
        "lexical_overlap",
        "subsequence",
        "constituent",
    }
    again = load_split(MNLI, "hans", DATA, limit=600, seed=1)
    assert [e["id"] for e in again.examples] == [e["id"] for e in hans.examples]
    dev = load_split(MNLI, "dev_matched", DATA)
    assert len(dev) == 9815


@needs_shared
@pytest.mark.parametrize(
    "task,split",
    [("qqp", "paws_qqp"), ("fever", "symmetric_v1"), ("fever", "symmetric_v2"), ("qqp", "train")],
)
def test_shared_other_tasks_load(task, split):
    s = load_split(BUILTIN[task], split, DATA)
    assert len(s) > 100
    assert len({e["label"] for e in s.examples}) >= 2


@needs_shared
def test_seeded_subsets_are_nested():
    small = {e["id"] for e in load_split(MNLI, "dev_matched", DATA, limit=300, seed=4).examples}
    large = {e["id"] for e in load_split(MNLI, "dev_matched", DATA, limit=900, seed=4).examples}
    assert len(small) == 300 and small < large
    other = {e["id"] for e in load_split(MNLI, "dev_matched", DATA, limit=300, seed=5).examples}
    assert other != small


def test_a_task_with_absolute_paths_needs_no_data_dir(tiny_task, tmp_path, monkeypatch):
    from robust_compress.data.load import DataArgs, load_eval_splits

    monkeypatch.chdir(tmp_path)  # no ../shared/data from here
    monkeypatch.delenv("ROBUST_COMPRESS_DATA", raising=False)
    assert set(load_eval_splits(DataArgs(task=str(tiny_task)))) == {"dev", "ood"}
