"""`shrink`: a user's model to a faster one, planned as a study, judged row by row against the
original, refused by the quality gate when a robustness row is measurably worse."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from robust_compress.io import UserError
from robust_compress.recipes.plan import ShrinkOptions, bias_kinds, study_spec
from robust_compress.report.shrink import Row, gate_failures
from robust_compress.study.spec import Experiment

from .conftest import tiny_run_config

SETTINGS = {"batch_size": 16, "lr": 2e-3, "max_length": 32, "checkpoint_every": 50, "bf16": False}


def test_auto_bias_is_the_tasks_known_biases_else_shallow(tiny_task):
    assert bias_kinds(ShrinkOptions(model="m", task="mnli")) == ["partial", "overlap"]
    assert bias_kinds(ShrinkOptions(model="m", task="qqp")) == ["overlap"]
    assert bias_kinds(ShrinkOptions(model="m", task="fever")) == ["partial"]
    assert bias_kinds(ShrinkOptions(model="m", task=str(tiny_task))) == ["shallow"]
    assert bias_kinds(ShrinkOptions(model="m", bias=["shallow", "overlap"])) == [
        "shallow",
        "overlap",
    ]
    with pytest.raises(UserError, match="distinct kinds"):
        bias_kinds(ShrinkOptions(model="m", bias=["hypothesis"]))


def test_the_plan_is_a_valid_study_whose_recovery_reads_the_first_bias_model(tmp_path):
    spec = study_spec(ShrinkOptions(model=str(tmp_path), speedup=2.5), tmp_path / "out")
    exp = Experiment.model_validate(spec)
    (c,) = exp.compressions
    assert c.method == "structured" and c.settings["init"] == "fisher"
    assert c.settings["target_speedup"] == 2.5
    assert c.settings["target_runtime"] == "onnxruntime-fp32"
    assert c.bias_models == ["partial"] and exp.losses == ["conf_reg"]
    assert list(exp.bias_models) == ["partial", "overlap"]
    assert set(exp.speed.runtimes) == {"onnxruntime-fp32", "pytorch-fp32"}
    assert exp.seeds == [42, 43, 44]


@pytest.mark.parametrize(
    "bad", [{"runtime": "tensorrt"}, {"loss": "nope"}, {"speedup": 1.0}, {"seeds": []}]
)
def test_bad_options_are_refused_before_any_work(bad):
    with pytest.raises(ValueError):
        ShrinkOptions(model="m", **bad)


def test_the_gate_refuses_only_a_measurably_worse_robustness_row():
    rows = [
        Row("ID accuracy", "70.0", "68.0", "-2.0 [-3.0, -1.0]", "lower", False, False),
        Row("hard", "50.0", "47.0", "-3.0 [-5.0, -1.0]", "less robust", True, True),
        Row("hans", "50.0", "49.0", "-1.0 [-2.0, +0.5]", "no measurable change", True, False),
    ]
    assert [r.what for r in gate_failures(rows)] == ["hard"]


def test_the_cli_gate_exits_1_naming_the_row_and_writes_no_model(monkeypatch, tmp_path):
    import robust_compress.recipes.shrink as recipe
    from robust_compress.cli import app

    worse = Row("hans accuracy", "60.0", "55.0", "-5.0 [-7.0, -3.0]", "less robust", True, True)
    monkeypatch.setattr(
        recipe, "shrink", lambda *a, **k: recipe.Outcome(tmp_path / "s.yaml", "table", [worse])
    )
    r = CliRunner().invoke(app, ["shrink", str(tmp_path), "--quality-gate", "-o", "x"])
    assert r.exit_code == 1
    assert "quality gate" in r.output and "hans accuracy -5.0 [-7.0, -3.0]" in r.output
    assert "written:" not in r.output


@pytest.mark.integration
def test_shrink_end_to_end_on_a_user_task_resumes_and_hands_over_the_model(
    tiny_dir, tiny_task, tmp_path
):
    """A user's YAML task (no known bias: a shallow bias model), a fine-tuned tiny model: the
    study runs, the verdict compares every set against the original, the model and its ONNX export
    are written, and a rerun reuses every stage."""
    from robust_compress.recipes.shrink import shrink
    from robust_compress.stages import finetune

    model = finetune(tiny_run_config(tiny_dir, tiny_task, tmp_path / "user-model", epochs=3))
    opts = ShrinkOptions(
        model=str(model),
        task=str(tiny_task),
        speedup=1.5,
        runtime="pytorch-fp32",
        seeds=[1, 2],
        settings=SETTINGS,
    )
    out = tmp_path / "shrunk"
    said: list[str] = []
    done = shrink(opts, out, echo=said.append)
    plan = yaml.safe_load((out / "shrink.yaml").read_text())
    assert list(plan["bias_models"]) == ["shallow"]
    verdict = json.loads((out / "verdict.json").read_text())
    whats = [r["what"] for r in verdict["rows"]]
    assert whats[0] == "ID accuracy" and "ood accuracy" in whats
    assert any(w.startswith("hard examples (shallow") for w in whats)
    assert {"ood k1 / entailment", "ood k2 / non-entailment"} <= set(whats)
    assert len(verdict["speedups"]["pytorch-fp32"]) == 2
    assert (out / "model" / "model.safetensors").is_file()
    assert (out / "model-onnx" / "model.onnx").is_file()
    assert done.written == [out / "model", out / "model-onnx"]
    assert (out / "verdict.md").read_text().startswith("| row | original | shrunk |")
    # the original is the fixed reference: evaluated once, its predictions on the same sets
    original = json.loads((out / "original" / "summary.json").read_text())
    assert set(original["splits"]) == {"dev", "ood"}
    again: list[str] = []
    shrink(opts, out, echo=again.append)
    assert again[0].endswith("0 to run")


def test_a_debiased_teacher_is_the_one_compressed(tmp_path):
    spec = study_spec(ShrinkOptions(model=str(tmp_path), debias_teacher=True), tmp_path / "o")
    exp = Experiment.model_validate(spec)
    assert exp.teachers["debiased"].loss == "conf_reg"
    assert exp.teachers["debiased"].bias == "partial"
    assert exp.compressions[0].teacher == "debiased"
