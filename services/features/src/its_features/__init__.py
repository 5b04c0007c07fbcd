"""ITS features: live minute-bar features per symbol, cached in Redis and published per minute."""

__version__ = "0.1.0"
