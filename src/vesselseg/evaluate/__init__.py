"""Scoring prediction sets against ground truth, with trivial baselines and honesty checks."""

from vesselseg.evaluate.evaluate import EvaluateConfig, EvaluationSummary, evaluate
from vesselseg.evaluate.honesty import HonestyCheck

__all__ = ["EvaluateConfig", "EvaluationSummary", "HonestyCheck", "evaluate"]
