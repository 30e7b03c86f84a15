"""The one output guard, tried on every command and every output option of the CLI (read from the
Typer app, so a new command or option cannot skip it): an output that is an input, an input's
parent, a path inside an input, a user's non-empty folder or a user's file is refused before any
work, with exit code 2, every byte left in place, with and without --overwrite."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import typer

from robust_compress import cli

from .conftest import ROOT, needs_shared

OUTPUT_OPTIONS = {"--output", "--export", "--output-dir"}
STUDY = ROOT / "docs" / "results" / "mnli-minilm-quick"


def output_options() -> set[tuple[str, str]]:
    group = typer.main.get_command(cli.app)
    return {
        (name, opt)
        for name, cmd in group.commands.items()
        for p in cmd.params
        for opt in p.opts
        if opt in OUTPUT_OPTIONS
    }


def has_overwrite(command: str) -> bool:
    cmd = typer.main.get_command(cli.app).commands[command]
    return any("--overwrite" in p.opts for p in cmd.params)


@pytest.fixture(scope="module")
def world(tmp_path_factory, written):
    """Inputs (a model, a bias model, a task, an experiment, a study naming a given teacher) and a
    user's folder, each a copy the commands may only read."""
    root = tmp_path_factory.mktemp("outputs")
    inp = root / "in"
    inp.mkdir()
    model = Path(shutil.copytree(written["teacher"], inp / "model"))
    bias = Path(shutil.copytree(written["bias"], inp / "bias"))
    task = inp / "task.yaml"
    task.write_text(Path(written["task"]).read_text())
    study = Path(shutil.copytree(STUDY, inp / "study"))
    index = json.loads((study / "index.json").read_text())
    index[0]["given"] = str(model)  # the study's teacher was given: the report must not touch it
    (study / "index.json").write_text(json.dumps(index, indent=1))
    exp = inp / "exp.yaml"
    exp.write_text(
        f"name: guard\ntask: {task}\noutput_dir: {root / 'study-out'}\nseeds: [0]\n"
        "defaults: {max_steps: 2, batch_size: 16, max_length: 32}\n"
        f"teacher: {{model: {model}, path: {model}}}\n"
        "compressions: [{name: m1, method: magnitude, settings: {sparsity: 0.1}}]\n"
        "losses: [ce]\n"
    )
    user = root / "user"
    (user / "photos").mkdir(parents=True)
    (user / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 not really a cat")
    (user / "notes.txt").write_text("my notes\n")
    cwd = root / "cwd"
    cwd.mkdir()
    return {
        "root": root,
        "model": model,
        "bias": bias,
        "task": task,
        "study": study,
        "exp": exp,
        "user": user,
        "cwd": cwd,
    }


def invocations(w) -> dict[tuple[str, str], tuple[list[Path], Callable[[str], list[str]]]]:
    """(command, output option) -> (the inputs it reads, its argv for an output)."""
    m, b, t = str(w["model"]), str(w["bias"]), str(w["task"])
    tiny = ["-s", "max_steps=1", "-s", "max_length=32", "-s", "batch_size=16"]
    mt = ["--model", m, "--task", t]
    prune = ["--method", "magnitude", "--sparsity", "0.5", "--loss", "distil", "--teacher", m]
    study = str(w["study"])
    return {
        ("finetune", "--output"): ([w["model"]], lambda o: ["finetune", *mt, "-o", o, *tiny]),
        ("compress", "--output"): (
            [w["model"]],
            lambda o: ["compress", *prune, *mt, "-o", o, *tiny],
        ),
        ("evaluate", "--output"): ([w["model"]], lambda o: ["evaluate", m, "--task", t, "-o", o]),
        ("uncertainty", "--output"): (
            [w["model"]],
            lambda o: ["uncertainty", "--oneshot", m, "--task", t, "-o", o],
        ),
        ("bias-model", "--output"): ([w["model"]], lambda o: ["bias-model", *mt, "-o", o, *tiny]),
        ("easy-hard", "--output"): (
            [w["bias"], w["model"]],
            lambda o: ["easy-hard", "--bias", b, *mt, "--split", "dev", "-o", o],
        ),
        ("reproduce", "--output-dir"): (
            [w["exp"], w["model"]],
            lambda o: ["reproduce", str(w["exp"]), "--output-dir", o],
        ),
        ("audit", "--output"): (
            [w["model"]],
            lambda o: ["audit", m, "--task", t, "--examples", "0", "-o", o],
        ),
        ("export", "--output"): ([w["model"]], lambda o: ["export", m, "-o", o]),
        ("shrink", "--output"): (
            [w["model"], w["task"]],
            lambda o: ["shrink", m, "--task", t, "-o", o],
        ),
        ("speed", "--output"): (
            [w["model"]],
            lambda o: ["speed", m, "--task", t, "--examples", "8", "-o", o],
        ),
        ("report", "--output"): ([w["study"], w["model"]], lambda o: ["report", study, "-o", o]),
        ("report", "--export"): (
            [w["study"], w["model"]],
            lambda o: ["report", study, "--export", o],
        ),
    }


def cases(w, inputs: list[Path]) -> list[tuple[str, Path]]:
    """(a) an input, (b) an input's parent, (c) a path inside an input (an existing file of it and
    a new path), (d) a user's non-empty folder, (e) a user's file."""
    out = [("parent of an input", inputs[0].parent)]
    for i in inputs:
        out.append((f"input {i.name}", i))
        if i.is_dir():
            inside = next(p for p in sorted(i.iterdir()) if p.is_file())
            out += [(f"inside input {i.name}", inside), (f"new path in input {i.name}", i / "new")]
    return out + [("a user's folder", w["user"]), ("a user's file", w["user"] / "notes.txt")]


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "dir"
        for p in sorted(root.rglob("*"))
    }


def run_main(argv: list[str]) -> int:
    old = sys.argv
    sys.argv = ["robust-compress", *argv]
    try:
        cli.main()
    except SystemExit as e:
        return int(e.code or 0)
    finally:
        sys.argv = old
    return 0


class WorkStarted(BaseException):
    """Not an Exception: no handler on the way may turn it into a one-line error."""


@pytest.fixture
def no_work(monkeypatch):
    """Loading weights or a study's results is work: the guard must refuse before either."""
    import transformers

    from robust_compress.report import export, render

    def work(*a, **k):
        raise WorkStarted("work started before the output was refused")

    for cls in (
        transformers.PreTrainedModel,
        transformers.AutoModel,
        transformers.AutoModelForSequenceClassification,
        transformers.AutoTokenizer,
    ):
        monkeypatch.setattr(cls, "from_pretrained", classmethod(work))
    monkeypatch.setattr(render, "load_study", work)
    monkeypatch.setattr(export, "_copy_run", work)


def test_every_output_option_of_every_command_is_tried(world):
    """A new command or output option must be added to the table below (and so be tried)."""
    assert output_options() == set(invocations(world))


TRIED = sorted(invocations(dict.fromkeys(("model", "bias", "task", "study", "exp"), Path())))


@needs_shared
@pytest.mark.parametrize("command,option", TRIED)
def test_an_output_over_an_input_or_a_users_files_is_refused_before_any_work(
    command, option, world, no_work, monkeypatch, capsys
):
    monkeypatch.chdir(world["cwd"])
    inputs, argv = invocations(world)[(command, option)]
    before = snapshot(world["root"])
    for overwrite in [False, True] if has_overwrite(command) else [False]:
        for what, out in cases(world, inputs):
            code = run_main(argv(str(out)) + (["--overwrite"] if overwrite else []))
            err = capsys.readouterr().err
            assert code == 2, f"{command} {option} {what} (overwrite={overwrite}): exit {code}"
            assert err.startswith("error: ") and err.count("\n") == 1, err
            assert snapshot(world["root"]) == before, f"{command} {option} {what} changed files"


def test_overwrite_replaces_only_what_the_tool_wrote(tmp_path):
    """--overwrite replaces the tool's own earlier output, recognised by its record; a file the
    user edited since, or put there, is theirs."""
    from robust_compress.io import UserError, atomic_dir, claim_output, write_json

    with atomic_dir(tmp_path / "out") as d:
        (d / "a.txt").write_text("1")
    with pytest.raises(UserError, match="pass --overwrite"):
        claim_output(tmp_path / "out")
    claim_output(tmp_path / "out", overwrite=True)
    write_json(tmp_path / "speed.json", {"a": 1}, record=True)
    claim_output(tmp_path / "speed.json", overwrite=True, folder=False)
    (tmp_path / "speed.json").write_text('{"mine": true}')  # edited by the user: now theirs
    with pytest.raises(UserError, match="did not write"):
        claim_output(tmp_path / "speed.json", overwrite=True, folder=False)
    with pytest.raises(UserError, match="did not write"):
        write_json(tmp_path / "speed.json", {"a": 2}, record=True)
    assert (tmp_path / "speed.json").read_text() == '{"mine": true}'
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "x").write_text("mine")
    with (  # the writer's last line of defence too
        pytest.raises(UserError, match="did not write"),
        atomic_dir(tmp_path / "user") as d,
    ):
        (d / "y").write_text("tool")
    assert (tmp_path / "user" / "x").read_text() == "mine"
    assert not list(tmp_path.glob(".user*"))
