"""Issue 17, the data/input half of a hostile probe: valid files are read exactly, bad ones are
refused in one line naming file, line and field; a tokenizer that is not the model's is refused;
the logit cache survives a truncated entry and writes with the umask's permissions."""

from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pytest

from robust_compress.data.load import DataArgs, eval_split_names, load_split
from robust_compress.data.tasks import BUILTIN, SplitSpec, TaskSpec
from robust_compress.io import UserError, read_json, read_jsonl, read_yaml

from .conftest import WORDS, make_examples

MNLI = BUILTIN["mnli"]


def _table_task(tmp_path, content: str, suffix: str = ".csv", id_column: str | None = None):
    """A two-label task whose training split is one CSV/TSV file written byte for byte."""
    f = tmp_path / f"d{suffix}"
    f.write_bytes(content.encode("utf-8"))
    return TaskSpec(
        name="t",
        text_a="s1",
        text_b="s2",
        labels=["neg", "pos"],
        splits={"train": SplitSpec(role="train", local=[str(f)], id_column=id_column)},
    )


def _jsonl(path, rows, prefix: str = ""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        prefix + "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows),
        encoding="utf-8",
    )


# ------------------------------------------------------------- 1. CSV/TSV read as CSV, not as lines


def test_csv_keeps_quoted_newlines_u2028_form_feeds_and_reports_physical_lines(tmp_path):
    text = (
        "s1,s2,label\n"
        '"first line\nsecond line",b,pos\n'  # lines 2-3
        'x,"a\u2028b",neg\n'  # line 4
        '"p\fq",y,pos\n'  # line 5
        "u\u2028v,w\x85z,neg\r\n"  # line 6: unquoted U+2028 and U+0085 are text
        '"m\r\nn",o,pos\n'
    )  # lines 7-8
    split = load_split(_table_task(tmp_path, text), "train")
    got = [(e["id"], e["text_a"], e["text_b"], e["label"]) for e in split.examples]
    assert got == [
        ("2", "first line\nsecond line", "b", 1),
        ("4", "x", "a\u2028b", 0),
        ("5", "p\fq", "y", 1),
        ("6", "u\u2028v", "w\x85z", 0),
        ("7", "m\r\nn", "o", 1),
    ]


def test_csv_line_numbers_do_not_drift_after_a_multiline_record(tmp_path):
    text = 's1,s2,label\n"a\nb\nc",d,pos\nx,y,bogus\n'
    with pytest.raises(UserError, match=r"d\.csv:5: unknown label 'bogus'"):
        load_split(_table_task(tmp_path, text), "train")


def test_tsv_reads_a_quoted_multiline_field(tmp_path):
    split = load_split(
        _table_task(tmp_path, 's1\ts2\tlabel\n"a\nb"\tc\tneg\nd\te\tpos\n', ".tsv"), "train"
    )
    assert [(e["id"], e["text_a"]) for e in split.examples] == [("2", "a\nb"), ("4", "d")]


@pytest.mark.parametrize("row,n", [("x,pos", 2), ("x,y,pos,extra", 4)])
def test_csv_rows_with_too_few_or_too_many_fields_are_refused(tmp_path, row, n):
    text = f"s1,s2,label\nx,y,neg\n{row}\n"
    with pytest.raises(UserError, match=rf"d\.csv:3: row has {n} fields, the header has 3$"):
        load_split(_table_task(tmp_path, text), "train")


def test_csv_duplicate_column_names_are_refused(tmp_path):
    with pytest.raises(UserError, match=r"d\.csv:1: duplicate column 'label' in the header"):
        load_split(_table_task(tmp_path, "s1,s2,label,label\nx,y,neg,pos\n"), "train")


def test_csv_not_utf8_still_names_file_and_line(tmp_path):
    f = tmp_path / "d.csv"
    task = _table_task(tmp_path, "")
    f.write_bytes(b's1,s2,label\n"a\nb",c,neg\ncaf\xe9,d,pos\n')
    with pytest.raises(UserError, match=r"d\.csv:4: not UTF-8 \(byte 0xe9"):
        load_split(task, "train")


# -------------------------------------------------------- 2. a byte-order mark is read, not refused


def test_jsonl_with_a_bom_is_read(tmp_path):
    _jsonl(
        tmp_path / "mnli" / "train.jsonl",
        [{"premise": "p", "hypothesis": "h", "label": 0}],
        prefix="\ufeff",
    )
    assert [e["label"] for e in load_split(MNLI, "train", tmp_path).examples] == [0]


def test_csv_with_a_bom_finds_its_first_column(tmp_path):
    split = load_split(
        _table_task(tmp_path, "\ufeffuid,s1,s2,label\nu7,x,y,pos\n", id_column="uid"), "train"
    )
    assert [e["id"] for e in split.examples] == ["u7"]


def test_json_and_yaml_with_a_bom_are_read(tmp_path):
    (tmp_path / "x.json").write_text('\ufeff{"a": 1}', encoding="utf-8")
    assert read_json(tmp_path / "x.json") == {"a": 1}
    (tmp_path / "x.yaml").write_text("\ufeffa: 1\n", encoding="utf-8")
    assert read_yaml(tmp_path / "x.yaml") == {"a": 1}


# ---------------------------------------------------------------- 3. tracebacks become one line


def test_deeply_nested_json_is_one_line(tmp_path):
    _jsonl(
        tmp_path / "mnli" / "train.jsonl",
        [{"premise": "p", "hypothesis": "h", "label": 0}, "[" * 200_000],
    )
    with pytest.raises(UserError, match=r"train\.jsonl:2: JSON nested too deeply$"):
        read_jsonl(tmp_path / "mnli" / "train.jsonl")
    with pytest.raises(UserError, match=r"train\.jsonl:2: JSON nested too deeply$"):
        load_split(MNLI, "train", tmp_path)


@pytest.mark.parametrize("label", ["--1", "\u00b2", "\u0661", "1\u00b2", "+1", " 1"])
def test_labels_that_only_look_like_numbers_are_unknown_labels(tmp_path, label):
    _jsonl(tmp_path / "mnli" / "train.jsonl", [{"premise": "p", "hypothesis": "h", "label": label}])
    with pytest.raises(UserError, match=r"train\.jsonl:1: unknown label "):
        load_split(MNLI, "train", tmp_path)


def test_ascii_digit_labels_still_work(tmp_path):
    rows = [{"premise": "p", "hypothesis": "h", "label": v} for v in ("2", "-1", "0")]
    _jsonl(tmp_path / "mnli" / "train.jsonl", rows)
    assert [e["label"] for e in load_split(MNLI, "train", tmp_path).examples] == [2, 0]


# ---------------------------------------------------------------- 4. a group_by field is required


@pytest.mark.parametrize("bad", [{}, {"heuristic": None}])
def test_a_hans_row_without_its_heuristic_is_refused(tmp_path, bad):
    ok = {"premise": "p", "hypothesis": "h", "label": "entailment", "heuristic": "subsequence"}
    row = {k: v for k, v in ok.items() if k != "heuristic"} | bad
    _jsonl(tmp_path / "hans" / "evaluation.jsonl", [ok, row])
    with pytest.raises(UserError, match=r"evaluation\.jsonl:2: .*'heuristic' .*group_by"):
        load_split(MNLI, "hans", tmp_path)


# ---------------------------------------------------------- 5. missing default eval splits are said


def _mnli_files(root, names):
    row = {"premise": "p", "hypothesis": "h", "label": 0, "idx": 1, "heuristic": "x"}
    for n in names:
        _jsonl(root / n, [row])


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_missing_default_eval_split_is_one_warning_naming_it(tmp_path, caplog):
    _mnli_files(
        tmp_path, ["mnli/train.jsonl", "mnli/dev_mismatched.jsonl", "hans/evaluation.jsonl"]
    )
    with caplog.at_level(logging.WARNING, logger="robust_compress"):
        names = eval_split_names(DataArgs(task="mnli", data_dir=str(tmp_path)))
    assert names == ["dev_mismatched", "hans"]
    lines = _warnings(caplog)
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "dev_matched" in lines[0] and str(tmp_path / "mnli" / "dev_matched.jsonl") in lines[0]


def test_no_id_split_left_by_default_is_an_error(tmp_path):
    _mnli_files(tmp_path, ["mnli/train.jsonl", "hans/evaluation.jsonl"])
    with pytest.raises(UserError, match=r"no ID eval split.*dev_matched.*dev_mismatched"):
        eval_split_names(DataArgs(task="mnli", data_dir=str(tmp_path)))


def test_explicit_eval_sets_are_taken_as_given(tmp_path, caplog):
    _mnli_files(tmp_path, ["mnli/train.jsonl", "hans/evaluation.jsonl"])
    with caplog.at_level(logging.WARNING, logger="robust_compress"):
        assert eval_split_names(
            DataArgs(task="mnli", data_dir=str(tmp_path), eval_sets=["hans"])
        ) == ["hans"]
    assert not _warnings(caplog)


def test_offline_qqp_without_dev_warns_and_keeps_heldout(tmp_path, caplog):
    _mnli_files(
        tmp_path,
        [
            "qqp/train.jsonl",
            "qqp/quora_pairs_split_unknown.jsonl",
            "paws_qqp/dev_and_test.jsonl",
            "paws_wiki/test.jsonl",
        ],
    )
    with caplog.at_level(logging.WARNING, logger="robust_compress"):
        names = eval_split_names(DataArgs(task="qqp", data_dir=str(tmp_path)))
    assert names == ["heldout", "paws_qqp", "paws_wiki"]
    lines = _warnings(caplog)
    assert len(lines) == 1 and "'dev'" in lines[0] and "qqp/dev.jsonl" in lines[0]


# ----------------------------------------------------------- 6. a tokenizer that is not the model's


def _bert_tokenizer(vocab: list[str]):
    from transformers import BertTokenizer

    return BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})


TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS


def test_a_shuffled_vocabulary_of_the_same_size_is_refused(tmp_path, tiny_dir, tiny_model):
    from robust_compress.models.load import load_tokenizer

    folder = tmp_path / "shuffled"
    shutil.copytree(tiny_dir, folder)
    _bert_tokenizer(TINY_VOCAB[::-1]).save_pretrained(folder)  # same tokens, [PAD] no longer id 0
    with pytest.raises(
        UserError, match=r"shuffled: tokenizer does not match the model \(.*pad_token_id"
    ):
        load_tokenizer(str(folder), tiny_model)


def test_a_vocabulary_changed_after_saving_is_refused_by_its_digest(tmp_path, tiny_dir, tiny_model):
    from robust_compress.models.load import load_tokenizer, save_model

    folder = tmp_path / "saved"
    save_model(tiny_model, load_tokenizer(str(tiny_dir)), folder)
    assert json.loads((folder / "tokenizer_digest.json").read_text())["vocab_size"] == len(
        TINY_VOCAB
    )
    load_tokenizer(str(folder), tiny_model)  # as saved: accepted
    swapped = list(TINY_VOCAB)
    i, j = swapped.index("cat"), swapped.index("dog")
    swapped[i], swapped[j] = (
        swapped[j],
        swapped[i],
    )  # special tokens where they were: only the digest sees it
    _bert_tokenizer(swapped).save_pretrained(folder)
    with pytest.raises(
        UserError, match=r"saved: tokenizer does not match the model \(.*vocabulary"
    ):
        load_tokenizer(str(folder), tiny_model)


def test_a_model_folder_without_tokenizer_files_says_so(tmp_path, tiny_dir, tiny_model):
    from robust_compress.models.load import load_tokenizer

    folder = tmp_path / "notok"
    shutil.copytree(tiny_dir, folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(
        UserError, match=r"notok: no tokenizer files \(tokenizer\.json / vocab\.txt / "
    ):
        load_tokenizer(str(folder), tiny_model)


# ---------------------------------------------------------------- 7, 8. the logit cache


def test_a_truncated_logit_cache_entry_is_recomputed(tmp_path, tiny_dir, caplog):
    from robust_compress.train.logit_cache import LogitCache

    cache, ex = LogitCache(tmp_path / "cache"), make_examples(24)
    first = cache.get(tiny_dir, ex, 32)
    (entry,) = (tmp_path / "cache" / "logits").glob("*.safetensors")
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="robust_compress"):
        again = cache.get(tiny_dir, ex, 32)
    np.testing.assert_array_equal(again, first)
    assert cache.misses == 2
    lines = _warnings(caplog)
    assert len(lines) == 1 and entry.name in lines[0] and "recomput" in lines[0]
    np.testing.assert_array_equal(
        LogitCache(tmp_path / "cache").get(tiny_dir, ex, 32), first
    )  # rewritten


def test_logit_cache_files_get_the_umask_permissions(tmp_path, tiny_dir):
    from robust_compress.train.logit_cache import LogitCache

    old = os.umask(0o022)
    try:
        LogitCache(tmp_path / "cache").get(tiny_dir, make_examples(8), 32)
    finally:
        os.umask(old)
    (entry,) = (tmp_path / "cache" / "logits").glob("*")
    assert entry.stat().st_mode & 0o777 == 0o644
