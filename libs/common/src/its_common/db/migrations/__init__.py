"""Versioned SQL migrations: ``NNNN_name.sql``; ``NNNN_name.timescale.sql`` need TimescaleDB."""
