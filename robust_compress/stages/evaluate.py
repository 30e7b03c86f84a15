"""`evaluate MODEL`: per-example predictions and a summary for any saved model, as it is meant to
run (an int8 artifact is scored as int8)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..data.load import load_eval_splits
from ..data.tasks import load_task
from ..evaluate import predict_tables, summarize
from ..io import UserError, check_fresh_output, check_not_inside
from ..models.load import check_model_dir, load_tokenizer, model_labels
from ..models.quantized import load_for_inference
from .artifact import load_reference, write_artifact
from .progress import Reporter


def default_output(model_dir: Path) -> Path:
    """Beside the model, never inside it: evaluating must not change the folder it reads."""
    model_dir = Path(model_dir)
    return model_dir.with_name(model_dir.name + "-eval")


def evaluate_folder(model_dir: str | Path, cfg: RunConfig, output: Path | None = None,
                    reference: str | Path | None = None, progress: Reporter | None = None,
                    overwrite: bool = False, new_head: bool = False) -> dict[str, Any]:
    """Evaluate a saved model; write predictions/ and summary.json to `output` (default: beside the
    model, `<model>-eval`). A folder without a classifier head is refused unless `new_head` (it
    would be scored by a random head)."""
    rep = progress or Reporter()
    model_dir = Path(model_dir)
    out = Path(output) if output else default_output(model_dir)
    check_not_inside(out, model_dir, "model folder")
    check_fresh_output(out, overwrite)
    check_model_dir(model_dir)
    if not model_labels(model_dir) and not new_head:
        raise UserError(f"{model_dir}: no classifier head (a bare encoder): it would be scored by a random head; "
                        "fine-tune it first, or pass --new-head to score a new (seeded) head on purpose")
    task = load_task(cfg.task)
    splits = load_eval_splits(cfg.data_args(), task)
    ref = load_reference(reference)
    model = load_for_inference(model_dir, task.labels)
    tokenizer = load_tokenizer(str(model_dir), model)
    rep.task("evaluate", sum(len(s) for s in splits.values()), "examples")
    tables, speed = predict_tables(model, tokenizer, splits, cfg, progress=rep.update)
    summary = summarize(tables, {n: s.role for n, s in splits.items()}, {n: s.group_by for n, s in splits.items()},
                        ref, rule=task.delta_rule(list(splits)))
    summary["eval_examples_per_s"] = {k: round(v, 1) for k, v in speed.items()}
    write_artifact(out, tables=tables, files={"summary.json": summary,
                                              "eval_config.yaml": cfg.model_dump(mode="json") | {"model": str(model_dir)}})
    return summary
