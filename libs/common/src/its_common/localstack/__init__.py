"""The local stack: Redis and PostgreSQL from pip-installed binaries, and a process supervisor."""
