"""Reports: load a study, assemble its rows from `evaluate`'s metrics, render tables, figures,
summary."""

from .export import export_study, merge_export
from .render import build_report

__all__ = ["build_report", "export_study", "merge_export"]
