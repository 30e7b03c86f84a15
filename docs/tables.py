"""The result tables of README.md and docs/*.md, generated from what is committed: each study's
export (docs/results/<study>/report/metrics.csv, speed.csv, analysis/) and the benchmark records
(docs/results/benchmarks/*.json). A table lives between `<!-- table:NAME -->` and `<!-- /table -->`.

    python docs/tables.py           # rewrite every table in place
    python docs/tables.py --check   # exit 1 naming each stale table (tests/test_docs.py runs it)

Hand-written because it is a page of formatting rules over pandas; no templating library would be
simpler, and a table typed by hand is how a number drifts from its export.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARK = re.compile(r"(<!-- table:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)

Row = dict  # one group row of a study's metrics.csv (plus its speed.csv columns)
Cell = Callable[[Row], str]


def _v(r: Row, k: str) -> float:
    v = r.get(k)
    return math.nan if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _spread(r: Row, k: str, scale: float, fmt: str) -> str:
    s = _v(r, f"{k}.std")
    return "" if math.isnan(s) or r.get("n_seeds", 1) < 2 else " ± " + fmt.format(scale * s)


def pct(k: str, d: int = 1, spread: bool = True, mark_constant: str | None = None) -> Cell:
    """100 × a metric (mean ± std over seeds); ‡ where the model predicts one class on ≥ 90 % of a
    split."""

    def cell(r: Row) -> str:
        v = _v(r, k)
        if math.isnan(v):
            return "–"
        s = f"{100 * v:.{d}f}" + (_spread(r, k, 100, f"{{:.{d}f}}") if spread else "")
        if mark_constant and _v(r, f"top_pred_share.{mark_constant}") >= 0.9:
            s += " ‡"
        return s

    return cell


def num(k: str, d: int = 2, spread: bool = True, scale: float = 1.0, suffix: str = "") -> Cell:
    def cell(r: Row) -> str:
        v = _v(r, k)
        if math.isnan(v):
            return "–"
        return (
            f"{scale * v:.{d}f}" + (_spread(r, k, scale, f"{{:.{d}f}}") if spread else "") + suffix
        )

    return cell


def speed(k: str = "speedup") -> Cell:
    """A measured speed-up; within 5 % of 1 it is timing noise and reads ≈ 1× (as in the
    reports)."""

    def cell(r: Row) -> str:
        v = _v(r, k)
        return "–" if math.isnan(v) else ("≈ 1×" if abs(v - 1) < 0.05 else f"{v:.2f}×")

    return cell


def joined(*cells: Cell, sep: str = " / ") -> Cell:
    return lambda r: sep.join(c(r) for c in cells)


def text(value: str) -> Cell:
    return lambda r: value


def field(k: str) -> Cell:
    return lambda r: str(r.get(k))


HANS_NE = joined(
    *(
        pct(f"by.hans.heuristic.{h}/non-entailment", 1, spread=False)
        for h in ("lexical_overlap", "subsequence", "constituent")
    )
)
HANS_NE_INT = joined(
    *(
        pct(f"by.hans.heuristic.{h}/non-entailment", 0)
        for h in ("lexical_overlap", "subsequence", "constituent")
    )
)
EASY_HARD = joined(
    pct("eh.dev_matched.easy_acc", spread=False), pct("eh.dev_matched.hard_acc", spread=False)
)
EASY_HARD_SD = joined(pct("eh.dev_matched.easy_acc"), pct("eh.dev_matched.hard_acc"))


def study_rows(study: str) -> list[Row]:
    """Group rows of a committed study export, with its timed columns merged in."""
    report = RESULTS / study / "report"
    m = pd.read_csv(report / "metrics.csv")
    m = m[m["level"] == "group"]
    if (report / "speed.csv").is_file():
        s = pd.read_csv(report / "speed.csv")
        s = s[s["level"] == "group"].drop(
            columns=["level", "unit", "group", "method", "loss", "sparsity", "seed"]
        )
        m = m.merge(s, on="name", how="left")
    return [{k: v for k, v in r.items()} for r in m.to_dict("records")]


def render(header: list[str], rows: list[list[str]]) -> str:
    for r in rows:  # a cell with a pipe in it would shift every later column
        if len(r) != len(header) or any("|" in c.replace("\\|", "") for c in [*header, *r]):
            raise ValueError(f"table row {r} does not fit its header {header}")
    return (
        "\n".join(
            ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(r) + " |" for r in rows]
        )
        + "\n"
    )


def study_table(
    study: str,
    columns: list[tuple[str, Cell]],
    only: list[str] | None = None,
    labels: dict[str, str] | None = None,
) -> Callable[[], str]:
    def build() -> str:
        rows = {r["name"]: r for r in study_rows(study)}
        names = only or list(rows)
        return render(
            [h for h, _ in columns],
            [
                [
                    (labels or {}).get(n, n) if h == "model / loss" else c(rows[n])
                    for h, c in columns
                ]
                for n in names
            ],
        )

    return build


def benchmark_table(name: str) -> Callable[[], str]:
    """A benchmark's printed table, recorded as JSON with its command, commit and machine."""

    def build() -> str:
        rec = json.loads((RESULTS / "benchmarks" / f"{name}.json").read_text())
        return render(rec["header"], rec["rows"])

    return build


def cross_check_table(a: str, b: str) -> Callable[[], str]:
    """The main job's numbers in two runs of the same study (report/crosscheck.py)."""

    def build() -> str:
        from robust_compress.report.crosscheck import cross_check
        from robust_compress.report.crosscheck import render as rows_of

        return render(*rows_of(cross_check(RESULTS / a, RESULTS / b), "2 threads", "1 thread"))

    return build


def report_table(
    study: str, title: str, columns: list[str], where: dict[str, str] | None = None
) -> Callable[[], str]:
    """Some columns (and rows, `where` column == value) of a table the study's exported report
    computed (its differences carry intervals that need the per-example predictions)."""

    def build() -> str:
        text = (RESULTS / study / "report" / "report.md").read_text(encoding="utf-8")
        head = f"## {title}\n"
        if head not in text:
            raise SystemExit(f"{study}: its report has no table {title!r}")
        lines = text.split(head, 1)[1].lstrip("\n").splitlines()
        table = []
        for line in lines:
            if not line.startswith("|"):
                break
            table.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
        header, body = table[0], table[2:]
        if missing := [c for c in [*columns, *(where or {})] if c not in header]:
            raise SystemExit(f"{study} / {title}: no columns {missing}; have {header}")
        keep = [header.index(c) for c in columns]
        rows = [r for r in body if all(r[header.index(k)] == v for k, v in (where or {}).items())]
        return render(columns, [[r[i] for i in keep] for r in rows])

    return build


def uncertainty_sources() -> str:
    """Vanilla and RMC with each uncertainty source, one study per source on the same data and
    seeds."""
    rows = []
    cost = {"dynamics": "none", "snapshots": "1 pruning run", "runs": "5 pruning runs"}
    name = {
        "dynamics": "RMC, training dynamics",
        "snapshots": "RMC, snapshots (default)",
        "runs": "RMC, 5 separate runs (paper)",
    }
    for src in ("dynamics", "snapshots", "runs"):
        rs = {r["name"]: r for r in study_rows(f"mnli-uncertainty-{src}")}
        agree = json.loads(
            (RESULTS / f"mnli-uncertainty-{src}" / "analysis" / "agreement.json").read_text()
        )
        if src == "dynamics":
            v = rs["magnitude-0.40/ce"]
            rows.append(
                [
                    "Vanilla (no RMC)",
                    "—",
                    "—",
                    pct("acc.dev_matched")(v),
                    pct("acc.hans")(v),
                    EASY_HARD(v),
                    pct("eh.dev_matched.gap")(v),
                    pct("ece_id")(v),
                ]
            )
        r = rs["magnitude-0.40/rmc"]
        rows.append(
            [
                name[src],
                cost[src],
                f"{100 * agree['agreement']:.1f} %",
                pct("acc.dev_matched")(r),
                pct("acc.hans")(r),
                EASY_HARD(r),
                pct("eh.dev_matched.gap")(r),
                pct("ece_id")(r),
            ]
        )
    return render(
        [
            "uncertainty source",
            "extra cost",
            "agrees with hyp.-only split",
            "dev-m",
            "HANS",
            "easy / hard",
            "E−H",
            "ECE",
        ],
        rows,
    )


def mpnet_teacher() -> str:
    r = {x["name"]: x for x in study_rows("mnli-mpnet-rmc-cpu")}["teacher"]
    rows = []
    for split, label in (
        ("dev_matched", "MNLI dev-matched"),
        ("dev_mismatched", "MNLI dev-mismatched"),
        ("hans", "HANS"),
    ):
        if f"acc.{split}" in r and not math.isnan(_v(r, f"acc.{split}")):
            rows.append(
                [
                    label,
                    f"**{100 * _v(r, f'acc.{split}'):.1f}**",
                    f"[{100 * _v(r, f'acc.{split}.ci_lo'):.1f}, "
                    f"{100 * _v(r, f'acc.{split}.ci_hi'):.1f}]",
                    f"{_v(r, f'ece.{split}'):.3f}",
                    f"{_v(r, f'conf.{split}'):.3f}",
                ]
            )
    return render(["set", "accuracy", "95 % CI", "ECE", "mean confidence"], rows)


MPNET_COLUMNS = [
    ("model / loss", None),
    ("dev-m", pct("acc.dev_matched")),
    ("HANS", pct("acc.hans", mark_constant="hans")),
    ("HANS non-entailed: lex / sub / const", HANS_NE),
    ("Δ", num("delta", 3)),
    ("F_bias", num("f_bias")),
    ("easy / hard", EASY_HARD),
    ("E−H", pct("eh.dev_matched.gap")),
    ("ECE", pct("ece_id")),
    ("non-zero params (M)", num("nonzero_parameters", 1, scale=1e-6)),
    ("FLOPs ÷", num("flops_reduction", suffix="×")),
]

WINS_BACK = "What wins it back: each loss against the Vanilla row of its compression"
WINS_BACK_COLUMNS = [
    "Compression",
    "Loss",
    "Seeds",
    "Δ ID",
    "Δ hard",
    "Δ hard (overlap split)",
    "Δ E−H gap",
    "Δ cue reliance",
    "hard-example cost recovered",
]
MITIGATION_HANS_COLUMNS = [
    ("model / loss", None),
    ("seeds", field("n_seeds")),
    ("dev-m", pct("acc.dev_matched")),
    ("HANS", pct("acc.hans", mark_constant="hans")),
    ("HANS non-ent. (lex / sub / con)", HANS_NE_INT),
    (
        "HANS entailed (lex / sub / con)",
        joined(
            *(
                pct(f"by.hans.heuristic.{h}/entailment", 0)
                for h in ("lexical_overlap", "subsequence", "constituent")
            )
        ),
    ),
    ("easy / hard", EASY_HARD_SD),
]


TABLES: dict[str, Callable[[], str]] = {
    "main-job": study_table(
        "mnli-minilm-quick",
        [
            ("model / loss", None),
            ("seeds", field("n_seeds")),
            ("dev-m", pct("acc.dev_matched")),
            ("HANS", pct("acc.hans", mark_constant="hans")),
            ("HANS non-ent. (lex / sub / con)", HANS_NE_INT),
            ("F_bias", num("f_bias")),
            ("easy / hard", EASY_HARD_SD),
            ("E−H", pct("eh.dev_matched.gap")),
            ("reliance", pct("shortcut.reliance")),
            ("ECE", pct("ece_id")),
        ],
    ),
    "mpnet-teacher": mpnet_teacher,
    "mpnet-gpu": study_table("mnli-mpnet-gpu", MPNET_COLUMNS),
    "mpnet-rmc-cpu": study_table("mnli-mpnet-rmc-cpu", MPNET_COLUMNS),
    "structured": study_table(
        "mnli-minilm-structured",
        [
            ("model / loss", None),
            ("seeds", field("n_seeds")),
            ("dev-m", pct("acc.dev_matched")),
            ("dev-mm", pct("acc.dev_mismatched")),
            ("HANS", pct("acc.hans")),
            ("HANS non-ent. (lex / sub / con)", HANS_NE_INT),
            ("F_bias", num("f_bias")),
            ("easy / hard", EASY_HARD_SD),
            ("E−H", pct("eh.dev_matched.gap")),
            ("ECE", pct("ece_id")),
            ("params", num("parameters", 1, spread=False, scale=1e-6, suffix="M")),
            ("MiB", num("bytes_on_disk", 0, spread=False, scale=2**-20)),
            ("FLOPs ÷", num("flops_reduction", spread=False)),
            ("speed-up", speed()),
            ("÷ FLOPs", num("speedup_per_flops", spread=False)),
        ],
    ),
    "recovery": study_table(
        "mnli-recovery-cpu",
        [
            ("model / loss", None),
            ("seeds", field("n_seeds")),
            ("dev-m (all 9,815)", pct("acc.dev_matched")),
            ("HANS", pct("acc.hans", mark_constant="hans")),
            ("HANS non-ent. (lex / sub / con)", HANS_NE_INT),
            ("F_bias", num("f_bias")),
            ("easy / hard", EASY_HARD_SD),
            ("E−H", pct("eh.dev_matched.gap")),
            ("params", num("parameters", 1, spread=False, scale=1e-6, suffix="M")),
            ("FLOPs ÷", num("flops_reduction", spread=False)),
            ("speed-up PyTorch fp32", speed("speedup.pytorch-fp32")),
            ("onnxruntime fp32", speed("speedup.onnxruntime-fp32")),
            ("onnxruntime int8", speed("speedup.onnxruntime-int8")),
        ],
    ),
    "qqp": study_table(
        "qqp-minilm-cpu",
        [
            ("model / loss", None),
            ("seeds", field("n_seeds")),
            ("held-out (bal.)", pct("acc.heldout")),
            ("PAWS-QQP", pct("acc.paws_qqp", mark_constant="paws_qqp")),
            ("PAWS-Wiki", pct("acc.paws_wiki")),
            ("OOD pooled", pct("acc_ood")),
            ("F_bias", num("f_bias", spread=False)),
            (
                "easy / hard",
                joined(
                    pct("eh.heldout.easy_acc", spread=False),
                    pct("eh.heldout.hard_acc", spread=False),
                ),
            ),
            ("E−H", pct("eh.heldout.gap", spread=False)),
            ("reliance", pct("shortcut.reliance", spread=False)),
            ("ECE", pct("ece_id", spread=False)),
            ("speed-up", speed()),
        ],
    ),
    "uncertainty-sources": uncertainty_sources,
    "mitigation": report_table("mnli-mitigation", WINS_BACK, WINS_BACK_COLUMNS),
    "mitigation-hans": study_table(
        "mnli-mitigation",
        MITIGATION_HANS_COLUMNS,
        only=[
            "teacher",
            "teacher-poe-overlap",
            "teacher-poe-hyp",
            "teacher-conf_reg-hyp",
            "magnitude-0.60/ce",
            "magnitude-0.60/poe-overlap",
            "magnitude-0.60/focal",
            "magnitude-0.60@poe-overlap/ce",
            "magnitude-0.60@poe-overlap/distil",
            "structured-0.50/ce",
            "structured-0.50/poe-overlap",
            "student-L3/ce",
        ],
    ),
    "mitigation-mpnet": report_table("mnli-mitigation-mpnet", WINS_BACK, WINS_BACK_COLUMNS),
    "mitigation-mpnet-hans": study_table(
        "mnli-mitigation-mpnet", [*MITIGATION_HANS_COLUMNS, ("speed-up", speed())]
    ),
    "bias-models": report_table(
        "mnli-mitigation",
        "Bias models: accuracy, how they scored the training set, and agreement (%)",
        [
            "Bias model",
            "Kind",
            "Accuracy (eval splits)",
            "Train acc. in-sample",
            "Train acc. cross-fitted",
            "Easy share (train)",
            "Chance agreement",
            "Agreement with dynamics uncertainty",
            "Agreement with other bias models",
        ],
    ),
    "debias-then-compress": report_table(
        "mnli-mitigation",
        "Debias, then compress: what a compressed model keeps of its teacher's debiasing gain",
        [
            "Compression",
            "Loss",
            "Seeds",
            "Δ hard",
            "Δ hans non-entailment constituent",
            "Δ hans non-entailment subsequence",
            "Δ cue reliance",
            "share kept: hard",
            "share kept: hans non-entailment constituent",
            "share kept: hans non-entailment subsequence",
            "share kept: cue reliance",
        ],
    ),
    **{
        name: benchmark_table(name)
        for name in ("runtimes", "compressed-speed", "teacher-throughput", "rmc-overhead")
    },
    "cross-thread": cross_check_table("mnli-minilm-quick", "mnli-minilm-quick-threads1"),
}


def refresh(text: str, where: str) -> tuple[str, list[str]]:
    changed = []

    def sub(m: re.Match) -> str:
        name = m["name"]
        if name not in TABLES:
            raise SystemExit(f"{where}: unknown table {name!r}; have {sorted(TABLES)}")
        body = TABLES[name]()
        if body != m["body"]:
            changed.append(name)
        return m.group(1) + body + m.group(4)

    return MARK.sub(sub, text), changed


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        new, changed = refresh(text, str(page))
        stale += [f"{page.relative_to(ROOT)}: {name}" for name in changed]
        if changed and not check:
            page.write_text(new, encoding="utf-8")
    if stale:
        print(("stale (run python docs/tables.py): " if check else "rewrote: ") + "; ".join(stale))
    return 1 if (check and stale) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
