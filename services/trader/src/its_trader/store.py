"""The trader's records in PostgreSQL: orders, fills, positions, snapshots, risk events, state.

One autocommit connection guarded by a lock; every write is idempotent (an order is keyed by its
client order id, a fill by its execution id), so replays after a crash change nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import psycopg
from psycopg.types.json import Jsonb

from its_trader.broker import AccountSummary, BrokerPosition, Execution

SERVICE: Final = "trader"
FENCE_NAME: Final = "trader"
"""The trader's row in ``leader_fence`` (one trader leads per database)."""
FINAL_STATUSES: Final = ("filled", "cancelled", "rejected", "expired")


class FencedOutError(RuntimeError):
    """An order refused in the database: its fencing token is lower than one already seen."""


@dataclass(frozen=True, slots=True)
class UnsettledOrder:
    client_order_id: str
    symbol: str
    side: str
    quantity: int
    created_at: datetime
    status: str
    limit_price: float | None  # None: a market order


def ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class TraderStore:
    def __init__(self, conn_kwargs: dict[str, Any]) -> None:
        self._kwargs = conn_kwargs
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    async def connect(self) -> None:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(**self._kwargs, autocommit=True)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self._lock:
            conn = await self._connection()
            cur = await conn.execute(sql.encode(), params)
            return await cur.fetchall() if cur.description else []

    # -- durable state -----------------------------------------------------------------------

    async def get_state(self, key: str) -> Any:
        rows = await self._execute(
            "SELECT value FROM service_state WHERE service = %s AND key = %s", (SERVICE, key)
        )
        return rows[0][0] if rows else None

    async def put_state(self, key: str, value: Any) -> None:
        await self._execute(
            "INSERT INTO service_state (service, key, value) VALUES (%s, %s, %s) "
            "ON CONFLICT (service, key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
            (SERVICE, key, Jsonb(value)),
        )

    # -- orders and fills --------------------------------------------------------------------

    async def record_order(
        self,
        client_order_id: str,
        account: str,
        broker: str,
        symbol: str,
        side: str,
        quantity: int,
        decision_ts_ms: int | None,
        reason: str,
        fence_token: int | None = None,
        limit_price: float | None = None,
    ) -> bool:
        """Insert the order as ``recorded`` (before it is sent); False when it already exists.

        With a fencing token (leader election on) the insert runs in one transaction after the
        lease's ``leader_fence`` row is raised to the token; a lower token than one already seen
        (a newer leader exists) raises :class:`FencedOutError` and records nothing.
        """
        sql = (
            "INSERT INTO orders (client_order_id, account, broker, symbol, side, quantity,"
            " status, decision_ts, reason, fence_token, order_type, limit_price)"
            " VALUES (%s,%s,%s,%s,%s,%s,'recorded',%s,%s,%s,%s,%s)"
            " ON CONFLICT (client_order_id) DO NOTHING RETURNING 1"
        )
        params = (
            client_order_id, account, broker, symbol, side, quantity,
            None if decision_ts_ms is None else ms_to_dt(decision_ts_ms), reason, fence_token,
            "MKT" if limit_price is None else "LMT", limit_price,
        )  # fmt: skip
        if fence_token is None:
            return bool(await self._execute(sql, params))
        async with self._lock:
            conn = await self._connection()
            async with conn.transaction():
                await self._raise_fence(conn, fence_token)
                cur = await conn.execute(sql.encode(), params)
                return bool(await cur.fetchall())

    async def claim_fence(self, token: int) -> None:
        """Raise the lease's fence to ``token`` (a new leader, before its first order)."""
        async with self._lock:
            conn = await self._connection()
            async with conn.transaction():
                await self._raise_fence(conn, token)

    async def _raise_fence(self, conn: psycopg.AsyncConnection[Any], token: int) -> None:
        cur = await conn.execute(
            b"INSERT INTO leader_fence (name, token) VALUES (%s, %s) ON CONFLICT (name) DO UPDATE"
            b" SET token = EXCLUDED.token, updated_at = now()"
            b" WHERE leader_fence.token <= EXCLUDED.token RETURNING token",
            (FENCE_NAME, token),
        )
        if await cur.fetchone() is None:
            raise FencedOutError(f"fencing token {token} is stale: a newer trader leads")

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await psycopg.AsyncConnection.connect(**self._kwargs, autocommit=True)
        return self._conn

    async def order_status(self, client_order_id: str) -> str | None:
        rows = await self._execute(
            "SELECT status FROM orders WHERE client_order_id = %s", (client_order_id,)
        )
        return str(rows[0][0]) if rows else None

    async def set_order_status(
        self,
        client_order_id: str,
        status: str,
        broker_order_id: str | None = None,
        filled_quantity: float | None = None,
    ) -> None:
        """Move an order forward; a final status (filled, cancelled...) is never overwritten."""
        await self._execute(
            "UPDATE orders SET status = %s, broker_order_id = COALESCE(%s, broker_order_id),"
            " filled_quantity = COALESCE(%s, filled_quantity), updated_at = now()"
            " WHERE client_order_id = %s AND status <> ALL(%s)",
            (status, broker_order_id, filled_quantity, client_order_id, list(FINAL_STATUSES)),
        )

    async def unsettled_orders(self) -> list[UnsettledOrder]:
        """Orders not final yet, oldest first."""
        rows = await self._execute(
            "SELECT client_order_id, symbol, side, quantity, created_at, status, limit_price"
            " FROM orders WHERE status <> ALL(%s) ORDER BY created_at",
            (list(FINAL_STATUSES),),
        )
        return [
            UnsettledOrder(
                str(r[0]),
                str(r[1]),
                str(r[2]),
                int(r[3]),
                r[4],
                str(r[5]),
                None if r[6] is None else float(r[6]),
            )
            for r in rows
        ]

    async def working_limit_orders(self, older_than_s: float) -> list[str]:
        """Client ids of limit orders sent longer than ``older_than_s`` ago and not final yet."""
        rows = await self._execute(
            "SELECT client_order_id FROM orders WHERE order_type = 'LMT'"
            " AND status IN ('submitted', 'partially_filled')"
            " AND created_at < now() - make_interval(secs => %s) ORDER BY created_at",
            (older_than_s,),
        )
        return [str(r[0]) for r in rows]

    async def record_fill(self, execution: Execution, account: str, broker: str) -> bool:
        """Store a fill once (execution id is the key); True when it was new."""
        await self._execute(
            "INSERT INTO orders (client_order_id, account, broker, broker_order_id, symbol,"
            " side, quantity, status, reason) VALUES (%s,%s,%s,%s,%s,%s,%s,'external',"
            " 'not placed by this trader') ON CONFLICT (client_order_id) DO NOTHING",
            (
                execution.client_order_id, account, broker, execution.broker_order_id,
                execution.symbol, execution.side, execution.quantity,
            ),
        )  # fmt: skip
        rows = await self._execute(
            "INSERT INTO fills (execution_id, client_order_id, ts, account, symbol, side,"
            " quantity, price, commission) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)"
            " ON CONFLICT (execution_id) DO NOTHING RETURNING 1",
            (
                execution.execution_id, execution.client_order_id, ms_to_dt(execution.ts_ms),
                account, execution.symbol, execution.side, execution.quantity, execution.price,
                execution.commission,
            ),
        )  # fmt: skip
        await self._execute(
            "UPDATE orders o SET filled_quantity = f.total, broker_order_id ="
            " COALESCE(o.broker_order_id, %s), status = CASE WHEN f.total >= o.quantity"
            " THEN 'filled' WHEN o.status IN ('cancelled', 'rejected', 'expired') THEN o.status"
            " ELSE 'partially_filled' END, updated_at = now()"
            " FROM (SELECT sum(quantity) AS total FROM fills WHERE client_order_id = %s) f"
            " WHERE o.client_order_id = %s",
            (execution.broker_order_id, execution.client_order_id, execution.client_order_id),
        )
        return bool(rows)

    async def sync_positions(self, account: str, positions: Iterable[BrokerPosition]) -> None:
        """Make the positions table equal the broker's positions (the broker is authoritative)."""
        current = list(positions)
        for position in current:
            await self._execute(
                "INSERT INTO positions (account, symbol, quantity, avg_price, realized_pnl)"
                " VALUES (%s,%s,%s,%s,%s) ON CONFLICT (account, symbol) DO UPDATE SET"
                " quantity = EXCLUDED.quantity, avg_price = EXCLUDED.avg_price,"
                " realized_pnl = EXCLUDED.realized_pnl, updated_at = now()",
                (
                    account, position.symbol, position.quantity, position.avg_price,
                    position.realized_pnl,
                ),
            )  # fmt: skip
        await self._execute(
            "UPDATE positions SET quantity = 0, updated_at = now() WHERE account = %s"
            " AND quantity <> 0 AND symbol <> ALL(%s)",
            (account, [p.symbol for p in current]),
        )

    async def positions(self, account: str) -> dict[str, float]:
        rows = await self._execute(
            "SELECT symbol, quantity FROM positions WHERE account = %s", (account,)
        )
        return {str(r[0]): float(r[1]) for r in rows}

    async def snapshot(self, summary: AccountSummary, ts: datetime) -> None:
        await self._execute(
            "INSERT INTO portfolio_snapshots (ts, account, cash, equity, gross_exposure,"
            " realized_pnl, unrealized_pnl) VALUES (%s,%s,%s,%s,%s,%s,%s)"
            " ON CONFLICT (account, ts) DO NOTHING",
            (
                ts, summary.account, summary.cash, summary.equity, summary.gross_exposure,
                summary.realized_pnl, summary.unrealized_pnl,
            ),
        )  # fmt: skip

    async def risk_event(
        self,
        outcome: str,
        reason: str | None,
        detail: str,
        *,
        decision_ts_ms: int | None = None,
        model_version: str | None = None,
        action: int | None = None,
        symbol: str | None = None,
        side: str | None = None,
        quantity: float | None = None,
    ) -> None:
        await self._execute(
            "INSERT INTO risk_events (decision_ts, model_version, action, symbol, side,"
            " quantity, outcome, reason, detail) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            (
                None if decision_ts_ms is None else ms_to_dt(decision_ts_ms), model_version,
                action, symbol, side, quantity, outcome, reason, detail,
            ),
        )  # fmt: skip

    async def record_signal(
        self,
        ts_ms: int,
        model_version: str,
        action: int,
        name: str,
        confidence: float,
        outcome: str,
    ) -> None:
        await self._execute(
            "INSERT INTO signals (ts, model_version, action, action_name, confidence,"
            " risk_outcome) VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (model_version, ts)"
            " DO UPDATE SET risk_outcome = EXCLUDED.risk_outcome",
            (ms_to_dt(ts_ms), model_version, action, name, confidence, outcome),
        )
