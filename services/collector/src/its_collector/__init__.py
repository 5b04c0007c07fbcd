"""ITS metrics collector: service metrics and Redis INFO into sys_metrics."""

__version__ = "0.1.0"
