"""The visualization stage's library: per-image panels, plots, an HTML report and a Markdown summary."""

from vesselseg.visualize.build import ReportConfig, ReportResult, build_report
from vesselseg.visualize.colours import ERROR_COLOURS
from vesselseg.visualize.overlay import error_overlay

__all__ = ["ERROR_COLOURS", "ReportConfig", "ReportResult", "build_report", "error_overlay"]
