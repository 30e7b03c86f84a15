"""Metrics as a pure layer (numpy and pandas; no torch, no config), low in the stack: a model's
summary, a study's report and an audit all compute every number with these functions, from the
saved per-example prediction tables."""

from .compare import Parts, cell_metric, compare, diff_ci, metric_parts, parts_stat, ratio_ci
from .scores import (
    COLLAPSE_MARGIN,
    COLLAPSE_SHARE,
    F_BIAS_MIN_TEACHER_DELTA,
    T975,
    aggregate,
    bootstrap_ci,
    collapse_check,
    collapse_probs,
    default_rule,
    easy_hard_metrics,
    expected_calibration_error,
    f_bias,
    is_collapsed,
    meta_columns,
    ood_accuracy,
    relative_bias,
    reliance,
    run_metrics,
    softmax,
    split_summary,
    summarize,
    teacher_delta_on,
)

__all__ = ["COLLAPSE_MARGIN", "COLLAPSE_SHARE", "F_BIAS_MIN_TEACHER_DELTA", "T975", "Parts", "aggregate",
           "bootstrap_ci", "cell_metric", "collapse_check", "collapse_probs", "compare", "default_rule", "diff_ci",
           "easy_hard_metrics", "expected_calibration_error", "f_bias", "is_collapsed", "meta_columns",
           "metric_parts", "ood_accuracy", "parts_stat", "ratio_ci", "relative_bias", "reliance", "run_metrics",
           "softmax", "split_summary", "summarize", "teacher_delta_on"]
