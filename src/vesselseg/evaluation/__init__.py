"""Scoring prediction sets against ground truth, with trivial baselines and honesty checks."""

from vesselseg.evaluation.evaluate import EvaluateConfig, EvaluationSummary, evaluate
from vesselseg.evaluation.honesty import HonestyCheck

__all__ = ["EvaluateConfig", "EvaluationSummary", "HonestyCheck", "evaluate"]
