"""The front door stays true: every relative link in README and docs resolves, every result table is
what docs/tables.py generates from the committed exports, the README stays short, and its commands
exist."""

from __future__ import annotations

import re
import runpy
import subprocess
import sys

import pytest

from .conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_relative_link_resolves(page):
    text = page.read_text(encoding="utf-8")
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{page.name}: link to {target} does not resolve"
        anchor = target.split("#")[1] if "#" in target else None
        if anchor and path.suffix == ".md":
            heads = {
                re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-")
                for h in re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), re.MULTILINE)
            }
            assert anchor in heads, f"{page.name}: no heading #{anchor} in {target}"


def test_every_result_table_is_generated_from_the_exports():
    tables = runpy.run_path(str(ROOT / "docs" / "tables.py"))
    assert tables["main"](["--check"]) == 0, (
        "a table in README/docs differs from its export: run python docs/tables.py"
    )


def test_a_table_edited_by_hand_is_caught(tmp_path, monkeypatch):
    tables = runpy.run_path(str(ROOT / "docs" / "tables.py"))
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    edited = text.replace("| 66.1 |", "| 66.2 |", 1)
    assert edited != text
    _, changed = tables["refresh"](edited, "README.md")
    assert changed == ["main-job"]


def test_a_table_whose_rows_do_not_fit_its_header_is_refused():
    tables = runpy.run_path(str(ROOT / "docs" / "tables.py"))
    with pytest.raises(ValueError, match="does not fit"):
        tables["render"](["a", "b"], [["1", "2", "3"]])
    with pytest.raises(ValueError, match="does not fit"):
        tables["render"](["a", "b | c"], [["1", "2"]])


def test_the_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 260
    first_screen = "\n".join(text.splitlines()[:60])
    assert (
        "## Three commands" in first_screen
        and "robust-compress reproduce configs/mnli-minilm-quick.yaml" in first_screen
    )
    assert "your own" in first_screen.lower()


def test_the_commands_the_readme_names_exist():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"^\| `([a-z-]+)[ `]", text, re.MULTILINE))
    out = subprocess.run(
        [sys.executable, "-m", "robust_compress.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    for cmd in named:
        assert re.search(rf"^\s+{cmd}\b", out, re.MULTILINE), (
            f"README names `{cmd}`, the CLI has no such command"
        )


def test_the_report_imports_no_torch():
    """Rendering tables needs numpy, pandas and matplotlib: `import robust_compress.report` loads no
    torch, transformers, accelerate or torchao (an import-graph property, not a timing)."""
    code = (
        "import sys, robust_compress.report\n"
        "print(sorted(m for m in ('torch', 'transformers', 'accelerate', 'torchao') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert out.strip() == "[]"


HEAVY = ("torch", "transformers", "accelerate", "torchao")
# commands that need no model: each runs in a fresh interpreter (`{tmp}`: a scratch folder)
LIGHT_COMMANDS = {
    "help": (["--help"], "Usage:"),
    "compress-help": (["compress", "--help"], "--sparsity"),  # option help read from the config
    "version": (["--version"], "robust-compress "),
    "tasks": (["tasks", "--data-dir", "{tmp}"], "data folder:"),
    "f-bias": (["f-bias", "{tmp}/model.json", "{tmp}/teacher.json"], "F_bias=0.5000"),
    "report": (["report", "{tmp}/study"], "index.json"),  # refused: no study there, after imports
}


@pytest.mark.parametrize("name", sorted(LIGHT_COMMANDS))
def test_commands_without_a_model_import_no_torch(name, tmp_path):
    """The CLI's help (built from the config's field descriptions), --version, `tasks`, `f-bias` and
    `report` load no torch, transformers, accelerate or torchao: the settings are declared apart
    from the modules that run them (`robust_compress/settings/`), so `--help` takes a fraction of a
    second instead of seconds. An import-graph property, not a timing."""
    import json

    for who, delta in (("model", 0.1), ("teacher", 0.2)):
        (tmp_path / f"{who}.json").write_text(
            json.dumps({"splits": {"dev": {"role": "id"}}, "delta": delta})
        )
    args, expect = LIGHT_COMMANDS[name]
    args = [a.format(tmp=tmp_path) for a in args]
    code = (
        "import json, sys\n"
        "from typer.testing import CliRunner\n"
        "from robust_compress.cli import app\n"
        f"r = CliRunner().invoke(app, {args!r}, terminal_width=200)\n"
        "print(json.dumps([r.output + str(r.exception or ''), "
        f"sorted(m for m in {HEAVY!r} if m in sys.modules)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    shown, loaded = json.loads(out.strip().splitlines()[-1])
    assert expect in shown, shown
    assert loaded == [], f"robust-compress {' '.join(args)} imported {loaded}"


def test_the_settings_are_the_registries_settings():
    """The light registries (settings/, torch-free) and the heavy ones (the losses' formulas, the
    compression methods) name the same entries with the same settings classes, and the config's
    unions and the CLI's choices are built from the light ones."""
    from robust_compress import config
    from robust_compress.compress import METHODS
    from robust_compress.settings import INPUT_SOURCES, LOSS_SETTINGS, METHOD_CONFIGS
    from robust_compress.train.extras import EXTRAS
    from robust_compress.train.losses import REGISTRY

    assert set(REGISTRY) == set(LOSS_SETTINGS) and set(METHODS) == set(METHOD_CONFIGS)
    for name, loss in REGISTRY.items():
        assert loss.Settings is LOSS_SETTINGS[name] and loss.needs == loss.Settings.needs
        assert set(loss.needs) <= set(INPUT_SOURCES), name
    for name, method in METHODS.items():
        assert method.Config is METHOD_CONFIGS[name]
    assert {n: e.source for n, e in EXTRAS.items()} == INPUT_SOURCES
    names = (config.LOSS_NAMES, config.METHOD_NAMES)
    assert names == (list(LOSS_SETTINGS), list(METHOD_CONFIGS))


def test_tasks_names_the_data_folder_it_read():
    from .conftest import DATA

    r = subprocess.run(
        [sys.executable, "-m", "robust_compress.cli", "tasks", "--data-dir", str(DATA)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert r.stdout.splitlines()[0] == f"data folder: {DATA.resolve()}"


PRESETS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.integration
@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_dry_runs(preset, monkeypatch):
    """From a fresh clone: a study preset plans and checks (a missing teacher.path is fine-tuned
    first from teacher.config); one that needs the hub or a download says so in one line; a run
    config points to `finetune -c`."""
    from robust_compress.io import UserError
    from robust_compress.study.run import prepare

    from .conftest import needs_shared

    if needs_shared.args[0]:
        pytest.skip("../shared not present")
    monkeypatch.chdir(ROOT)
    header = preset.read_text(encoding="utf-8")
    try:
        prepare(preset.relative_to(ROOT))
    except UserError as e:
        msg = str(e)
        assert "\n" not in msg
        if "a run config" in msg:
            assert f"finetune -c {preset.relative_to(ROOT)}" in msg
        elif "hub" in msg:
            assert "hub" in header.lower(), f"{preset.name} needs the hub: its header must say so"
        else:
            assert "not found" in msg and (
                "fetch-all-mpnet" in header or "download" in header.lower()
            ), msg


def test_the_layer_order_the_docs_give_is_the_contracts():
    """One layer order: every 'a → b → … → cli' chain in the README and docs is the import-linter
    contract's layers, read bottom to top (the docs had listed an `evaluate` layer that does not
    exist)."""
    import tomllib

    contract = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in contract["contracts"] if c["type"] == "layers")["layers"]
    order = [m.removeprefix("robust_compress.") for m in reversed(layers)]
    chains = [
        re.split(r"\s*→\s*", m.group(0))
        for page in PAGES
        for m in re.finditer(r"\w+(?:\s*→\s*\w+){3,}", page.read_text())
    ]
    layer_chains = [c for c in chains if c[-1] == "cli"]
    assert len(layer_chains) >= 2  # the README's and methods.md's
    for chain in layer_chains:
        assert chain == order, chain


def test_the_where_a_change_goes_table_names_real_files_and_registries():
    """docs/methods.md's extension table: every file or folder it names exists, and every registry,
    class or function it names beside them is in one of that row's files."""
    text = (ROOT / "docs" / "methods.md").read_text(encoding="utf-8")
    table = text.split("### Where a change goes", 1)[1].split("\n\n")[2]
    rows = [r for r in table.splitlines()[2:] if r.startswith("|")]
    assert len(rows) >= 10
    for row in rows:
        tokens = re.findall(r"`([^`]+)`", row)
        paths = [ROOT / t for t in tokens if "/" in t]
        assert paths, row
        for p in paths:
            assert p.exists(), f"{row}: {p} does not exist"
        files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.glob("*.py")))]
        code = "\n".join(f.read_text(encoding="utf-8") for f in files)
        for name in (t for t in tokens if "/" not in t):
            assert re.search(rf"\b{re.escape(name)}\b", code), f"{row}: {name} not in its files"
