"""The chart rendering fixtures, shared with tests/chart (for test_chart_model)."""

from tests.chart.conftest import chart, render

__all__ = ["chart", "render"]
