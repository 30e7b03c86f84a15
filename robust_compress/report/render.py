"""Write a study's report: Markdown + self-contained HTML, figures, and metrics.csv/.json, all
checked first and written in one rename (a bad input leaves no report folder)."""

from __future__ import annotations

import base64
import html
import json
import math
import re
from io import BytesIO
from pathlib import Path
from typing import Any

import pandas as pd

from ..io import adopt, atomic_dir, claim_output
from ..metrics.long import COLUMNS, long_rows
from ..schemas import MetricsTable
from .compute import compute, metric_rows
from .figures import make_figures
from .load import load_study, study_reads
from .mitigation import bias_model_table, debias_then_compress, wins_back, wins_back_figure
from .summary import summary_lines
from .tables import Table, make_tables

CSS = (
    "body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;"
    "max-width:1200px;\n"
    "margin:2em auto;padding:0 1em;color:#222;line-height:1.45}"
    "h1,h2{border-bottom:1px solid #ddd;\n"
    "padding-bottom:.2em}.scroll{overflow-x:auto;max-width:100%}table{border-collapse:collapse;"
    "margin:1em 0;\n"
    "font-size:.85em}th,td{border:1px solid #ccc;padding:.3em .5em;text-align:right}"
    "th{background:#f3f3f3}\n"
    "td:first-child,th:first-child{text-align:left}td:first-child{white-space:nowrap}\n"
    "tr:nth-child(even){background:#fafafa}figure{margin:1.5em 0}\n"
    "img{max-width:100%}figcaption,.note,.foot{color:#555;font-size:.9em}.summary li{margin:.3em 0}"
)


TIMED = {
    "examples_per_s",
    "speedup",
    "speedup_per_flops",
}  # measured on the machine, not from predictions


def _md_text(text: str) -> str:
    """Markdown text that may hold user strings (names of sets, groups, labels, the study): no
    HTML tag or comment (an unclosed `<!--` would hide the rest of the page); a bare `<` as in
    "< 0.01" is kept."""
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text)


def _md_cell(text: str) -> str:
    """A table cell: HTML escaped, and `\\`, `|` (a new cell) and backticks escaped."""
    s = html.escape(str(text), quote=False).replace("\\", "\\\\")
    return " ".join(s.replace("|", "\\|").replace("`", "\\`").splitlines())


def _md_table(t: Table) -> str:
    lines = [
        f"## {_md_text(t.title)}",
        "",
        "| " + " | ".join(map(_md_cell, t.header)) + " |",
        "|" + "---|" * len(t.header),
    ]
    return (
        "\n".join(
            lines
            + ["| " + " | ".join(map(_md_cell, r)) + " |" for r in t.rows]
            + [""]
            + [f"{_md_text(n)}  " for n in t.notes]
        )
        + "\n"
    )


def _html_table(t: Table) -> str:
    e = html.escape
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in t.rows)
    notes = "".join(f"<p class='foot'>{e(n)}</p>" for n in t.notes)
    return (
        f"<h2>{e(t.title)}</h2>\n<div class='scroll'><table><thead><tr>"
        f"{''.join(f'<th>{e(h)}</th>' for h in t.header)}</tr></thead><tbody>{body}</tbody>"
        f"</table></div>{notes}\n"
    )


def _html_list(lines: list[str]) -> str:
    """Summary lines as a list; lines indented by two spaces nest under the line before them."""
    out, open_sub = ["<ul class='summary'>"], False
    for line in lines:
        sub = line.startswith("  ")
        if sub and not open_sub:
            out[-1] = out[-1].removesuffix("</li>")
            out.append("<ul>")
        elif not sub and open_sub:
            out.append("</ul></li>")
        open_sub = sub
        out.append(f"<li>{html.escape(line.strip())}</li>")
    out.append("</ul></li></ul>" if open_sub else "</ul>")
    return "".join(out)


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def build_report(
    study_dir: str | Path,
    out_dir: str | Path | None = None,
    name: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Load and check everything first, then write report.md/.html, figures/ and metrics.csv/.json
    into `out_dir` (default `<study>/report`, the tool's own: replaced) in one rename; returns that
    folder. An existing `out_dir` of the user's is replaced only with `overwrite`."""
    study_path = Path(study_dir)
    default = study_path / "report"
    if out_dir is None or Path(out_dir).resolve() == default.resolve():
        out_dir = default  # a study's report folder is the tool's own
    else:
        claim_output(out_dir, study_reads(study_path), overwrite)
    study = load_study(study_path)
    runs = study.runs
    rows = compute(study)
    groups, teacher = rows.groups, rows.teacher
    splits = {s: role for r in runs for s, role in r.roles.items() if role != "cue"}
    splits = dict(
        sorted(splits.items(), key=lambda kv: kv[1] != "id")
    )  # ID splits first, order kept
    easy_splits = [
        s
        for s, part in study.easy_hard.items()
        if any(part.attrs["split"] in r.tables for r in runs)
    ]
    tables = make_tables(groups, splits, easy_splits, rows.cells, rows.runtimes, rows.missing)
    figures = make_figures(groups, teacher, runs, easy_splits, rows.runtimes)
    seeds = max((g["n_seeds"] for g in groups.values()), default=1)
    notes = [
        (
            f"Study: {name or study_path.resolve().name}; {len(runs)} runs in {len(groups)} rows "
            "(a row is a group, or group/loss when a group holds several losses); teacher: "
            f"{teacher or 'none (no F_bias, no speed-up)'}."
        ),
        (
            "Every number is computed from the saved per-example prediction tables. Accuracy "
            "cells: "
            + (
                "mean ± std over seeds [95% CI over seeds (Student t)]; a row with one seed shows "
                "its bootstrap 95% CI over examples."
                if seeds > 1
                else "one seed per row: value [bootstrap 95% CI over examples]."
            )
        ),
    ]
    if study.agreement:
        a = study.agreement
        notes.append(
            f"Per-sample uncertainty vs the bias-only model on {a['n']} training examples: the "
            f"{100 * a['bias_easy_fraction']:.1f}% lowest-variance examples (uncertainty-easy) "
            f"agree with the bias-model easy/hard split on {100 * a['agreement']:.1f}% of examples "
            f"(paper: 82.8%; chance at this split: {100 * a['chance']:.1f}%)."
        )
    scored = (study.uncertainty or {}).get("models_scored") or []
    if scored:
        parts = [
            f"{m['model']}: train acc {100 * m['train_acc']:.1f}%"
            + (
                f", predicts {m['top_pred']!r} on {100 * m['top_pred_share']:.0f}% (collapsed)"
                if m["top_pred_share"] >= 0.9
                else ""
            )
            for m in scored
        ]
        notes.append(
            f"Per-sample uncertainty (RMC) is the variance of each training example's loss over "
            f"{len(scored)} models ({(study.uncertainty or {}).get('source')}): "
            + "; ".join(parts)
            + "."
        )
    summary = summary_lines(study, rows, easy_splits)
    easy = study.easy_hard[easy_splits[0]] if easy_splits else None
    others = {  # the same split by the study's other bias models: "dev_matched.overlap" -> overlap
        s.split(".", 1)[1]: study.easy_hard[s]
        for s in easy_splits[1:]
        if "." in s and easy_splits and s.split(".")[0] == easy_splits[0].split(".")[0]
    }
    back_tables, back_lines, back_points = wins_back(study, rows, easy, others)
    debias_tables, debias_lines = debias_then_compress(study, rows, easy)
    back_tables += debias_tables + bias_model_table(study)
    back_fig = wins_back_figure(back_points)
    if back_fig is not None:
        figures.insert(
            0,
            (
                "wins_back.png",
                (
                    "What wins it back: Δ hard-example accuracy against Δ ID accuracy, each "
                    "loss against its compression's Vanilla row (95 % intervals); the dotted "
                    "and dashed lines: half and all of the compression's hard-example cost"
                ),
                back_fig,
            ),
        )
    out = Path(out_dir)
    if out == default and out.is_dir():
        adopt(out)  # the study loaded: its report folder, maybe from before records, is ours
    with atomic_dir(out) as tmp:
        (tmp / "figures").mkdir()
        md = ["# Robustness report", ""] + [f"{_md_text(n)}\n" for n in notes]
        page = [
            (
                "<!doctype html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' "
                "content='width=device-width'><title>Robustness report</title>"
            ),
            f"<style>{CSS}</style></head><body><h1>Robustness report</h1>",
        ]
        page += [f"<p class='note'>{html.escape(n)}</p>" for n in notes]
        if summary:
            md += ["## Summary: what compression cost, what each loss won back", ""]
            md += [
                _md_text(f"    - {s.strip()}" if s.startswith("  ") else f"- {s}") for s in summary
            ] + [""]
            page.append(
                "<h2>Summary: what compression cost, what each loss won back</h2>"
                + _html_list(summary)
            )
        if back_lines or back_tables:
            title = "What wins it back"
            md += (
                [f"## {title}", ""]
                + [
                    _md_text(f"    - {x.strip()}" if x.startswith("  ") else f"- {x}")
                    for x in back_lines + debias_lines
                ]
                + [""]
            )
            page.append(f"<h2>{title}</h2>" + _html_list(back_lines + debias_lines))
        for t in back_tables + tables:
            md.append(_md_table(t))
            page.append(_html_table(t))
        md.append("## Figures\n")
        page.append("<h2>Figures</h2>")
        for fname, alt, fig in figures:
            buf = BytesIO()
            fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
            (tmp / "figures" / fname).write_bytes(buf.getvalue())
            md.append(f"![{alt}](figures/{fname})\n")
            page.append(
                f"<figure><img alt='{html.escape(alt, quote=True)}' src='data:image/png;base64,"
                f"{base64.b64encode(buf.getvalue()).decode()}'><figcaption>{html.escape(alt)}"
                "</figcaption></figure>"
            )
        (tmp / "report.md").write_text("\n".join(md), encoding="utf-8")
        (tmp / "report.html").write_text("\n".join(page) + "</body></html>\n", encoding="utf-8")
        # metrics.csv/.json: everything computed from predictions (identical when a study is rerun);
        # speed.csv: what was timed on the machine (examples/s, speed-ups), which a rerun measures
        # anew
        flat = metric_rows(runs, rows)
        ids = ("level", "name", "unit", "group", "method", "loss", "sparsity", "seed")
        timed = [k for k in dict.fromkeys(k for r in flat for k in r) if k.split(".")[0] in TIMED]
        pd.DataFrame([{k: v for k, v in r.items() if k not in timed} for r in flat]).to_csv(
            tmp / "metrics.csv", index=False
        )
        if timed:
            pd.DataFrame([{k: r.get(k) for k in (*ids, *timed)} for r in flat]).to_csv(
                tmp / "speed.csv", index=False
            )
        # metrics_long.csv: the same numbers, one row per (run, metric, split, group), typed
        long = MetricsTable.validate_python(
            long_rows([{k: v for k, v in r.items() if k not in timed} for r in flat])
        )
        pd.DataFrame([r.model_dump() for r in long], columns=list(COLUMNS)).to_csv(
            tmp / "metrics_long.csv", index=False
        )
        (tmp / "metrics.json").write_text(
            json.dumps(
                {
                    "teacher": teacher,
                    "rows": [{k: _clean(v) for k, v in r.items() if k not in timed} for r in flat],
                },
                indent=1,
                allow_nan=False,
            )
            + "\n",
            encoding="utf-8",
        )
    return out
