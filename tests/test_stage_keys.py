"""Stage keys are the cache: a refactor that changes one silently reruns every finished study (the
mitigation study takes hours). The keys of three presets on ../shared are pinned; a change that
means to change them (a new KEY_VERSION) regenerates tests/golden/stage_keys.json on purpose."""

from __future__ import annotations

import json

import pytest

from robust_compress.study.run import prepare

from .conftest import ROOT, needs_shared

GOLDEN = json.loads((ROOT / "tests" / "golden" / "stage_keys.json").read_text())


@needs_shared
@pytest.mark.integration
@pytest.mark.parametrize("preset", sorted(GOLDEN))
def test_stage_keys_do_not_move(preset, monkeypatch):
    monkeypatch.chdir(ROOT)
    _, stages = prepare(preset)
    assert {s.name: s.key for s in stages} == GOLDEN[preset]
