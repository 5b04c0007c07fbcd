"""ITS dashboard: web page, JSON API and live updates over Redis and TimescaleDB; kill switch."""

__version__ = "0.1.0"
