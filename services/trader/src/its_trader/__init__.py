"""ITS trader: risk engine, kill switch, orders through a broker adapter, persistence, recovery."""

__version__ = "0.1.0"
