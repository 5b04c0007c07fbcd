"""Connection settings and psycopg 3 pools (sync and async)."""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool, ConnectionPool

from its_common.settings import BaseServiceSettings


def connection_kwargs(settings: BaseServiceSettings) -> dict[str, Any]:
    """Keyword arguments for psycopg.connect: DATABASE_URL plus the password kept apart from it."""
    kwargs: dict[str, Any] = {"conninfo": settings.database_url, "connect_timeout": 5}
    if settings.database_password is not None:
        kwargs["password"] = settings.database_password.get_secret_value()
    kwargs["application_name"] = settings.effective_service_name()
    return kwargs


def _pool_kwargs(settings: BaseServiceSettings) -> tuple[str, dict[str, Any]]:
    kwargs = connection_kwargs(settings)
    return kwargs.pop("conninfo"), kwargs


def sync_pool(
    settings: BaseServiceSettings, min_size: int = 1, max_size: int = 4
) -> ConnectionPool:
    conninfo, kwargs = _pool_kwargs(settings)
    return ConnectionPool(
        conninfo, kwargs=kwargs, min_size=min_size, max_size=max_size, open=False, name="its"
    )


def async_pool(
    settings: BaseServiceSettings, min_size: int = 1, max_size: int = 4
) -> AsyncConnectionPool:
    """An async pool, not yet opened: ``await pool.open()`` (or use ``async with``)."""
    conninfo, kwargs = _pool_kwargs(settings)
    return AsyncConnectionPool(
        conninfo, kwargs=kwargs, min_size=min_size, max_size=max_size, open=False, name="its"
    )
