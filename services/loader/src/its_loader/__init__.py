"""ITS loader: Redis Streams to TimescaleDB, REST backfill, gap audit."""

__version__ = "0.1.0"
