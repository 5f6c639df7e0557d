"""Budget windows: one ``aevos_budgets`` row per scope and window, and the one conditional
UPDATE that hands usage out.

How much to lease, and when, is :mod:`aevos.models.budget`'s business. The database only
ever hands out usage that fits every limit of the row, with one atomic statement::

    UPDATE aevos_budgets SET calls_used = calls_used + :n, cost_used = cost_used + :c, ...
     WHERE scope = :s AND window_start = :w
       AND (calls_limit IS NULL OR calls_used + :n <= calls_limit)
       AND (cost_limit IS NULL OR cost_used + :c <= cost_limit) AND (tokens ... likewise)

so the total handed out, to every process together, never exceeds a limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .repository import Repository, StoreHandle
from .schema import budgets

# Costs are floats: 0.1 added ten times must still fit a limit of 1.0.
EPS = 1e-9


@dataclass(frozen=True)
class Usage:
    """A scope's row for one window, as the database holds it (including chunks leased by
    processes and not yet spent)."""

    scope: str
    window_start: float
    window_seconds: float
    calls_limit: int | None
    cost_limit: float | None
    tokens_limit: int | None
    calls_used: int
    cost_used: float
    tokens_used: int


@dataclass(frozen=True)
class Limits:
    """A window's limits; None means unlimited."""

    window: float
    calls: int | None
    cost: float | None
    tokens: int | None


class _Sql:
    def __init__(self, store: StoreHandle) -> None:
        b, bp = budgets.c, sa.bindparam
        n, c, t = bp("n", type_=sa.Integer), bp("c", type_=sa.Float), bp("t", type_=sa.Integer)
        key = sa.and_(b.scope == bp("s"), b.window_start == bp("w", type_=sa.Float))
        self.take = (
            sa.update(budgets)
            .where(
                key,
                sa.or_(b.calls_limit.is_(None), b.calls_used + n <= b.calls_limit),
                sa.or_(b.cost_limit.is_(None), b.cost_used + c <= b.cost_limit + EPS),
                sa.or_(b.tokens_limit.is_(None), b.tokens_used + t <= b.tokens_limit),
            )
            .values(
                calls_used=b.calls_used + n,
                cost_used=b.cost_used + c,
                tokens_used=b.tokens_used + t,
                updated_at=bp("now"),
            )
        )

        def minus(column: Any, amount: Any, zero: Any) -> Any:
            # Never below zero: float sums of returned costs can drift a hair under.
            return sa.case((column - amount < zero, zero), else_=column - amount)

        self.give_back = (
            sa.update(budgets)
            .where(key)
            .values(
                calls_used=minus(b.calls_used, n, 0),
                cost_used=minus(b.cost_used, c, 0.0),
                tokens_used=minus(b.tokens_used, t, 0),
                updated_at=bp("now"),
            )
        )
        self.row = sa.select(budgets).where(key)
        self.insert = store.dialect.insert(budgets)
        self.open = self.insert.on_conflict_do_nothing(index_elements=["scope", "window_start"])


def _params(scope: str, start: float, amounts: Sequence[float], now: float) -> dict[str, Any]:
    return {
        "s": scope,
        "w": start,
        "n": round(amounts[0]),
        "c": amounts[1],
        "t": round(amounts[2]),
        "now": now,
    }


def _values(scope: str, start: float, limits: Limits, now: float) -> dict[str, Any]:
    return {
        "scope": scope,
        "window_start": start,
        "window_seconds": limits.window,
        "calls_limit": limits.calls,
        "cost_limit": limits.cost,
        "tokens_limit": limits.tokens,
        "calls_used": 0,
        "cost_used": 0.0,
        "tokens_used": 0,
        "updated_at": now,
    }


class BudgetRepository(Repository):
    """Budget windows of every scope, in the unit of work it is bound to."""

    @property
    def _sql(self) -> _Sql:
        return self.uow.prepared(_Sql)

    def set_limits(self, scope: str, start: float, limits: Limits, now: float) -> None:
        """Create the window's row, or move its limits to ``limits`` (a reconfiguration)."""
        values = _values(scope, start, limits, now)
        stmt = self._sql.insert.values(values).on_conflict_do_update(
            index_elements=["scope", "window_start"],
            set_={
                "window_seconds": limits.window,
                "calls_limit": limits.calls,
                "cost_limit": limits.cost,
                "tokens_limit": limits.tokens,
                "updated_at": now,
            },
        )
        self.conn.execute(stmt)

    def open(self, scope: str, start: float, limits: Limits, now: float) -> None:
        """Create the window's row unless it exists (a window's first use)."""
        self.conn.execute(self._sql.open, _values(scope, start, limits, now))

    def take(self, scope: str, start: float, amounts: Sequence[float], now: float) -> bool:
        """Count ``amounts`` (calls, cost, tokens) as used if they fit every limit of the
        window; False (nothing counted) if they do not, or there is no such window."""
        result = self.conn.execute(self._sql.take, _params(scope, start, amounts, now))
        return bool(result.rowcount == 1)

    def give_back(self, scope: str, start: float, amounts: Sequence[float], now: float) -> None:
        """Return unspent usage (negative amounts charge an overrun); never below zero."""
        self.conn.execute(self._sql.give_back, _params(scope, start, amounts, now))

    def usage(self, scope: str, start: float) -> Usage | None:
        """The window's row; None before its first use."""
        row = self.conn.execute(self._sql.row, {"s": scope, "w": start}).first()
        if row is None:
            return None
        return Usage(
            scope=row.scope,
            window_start=row.window_start,
            window_seconds=row.window_seconds,
            calls_limit=row.calls_limit,
            cost_limit=row.cost_limit,
            tokens_limit=row.tokens_limit,
            calls_used=int(row.calls_used),
            cost_used=float(row.cost_used),
            tokens_used=int(row.tokens_used),
        )
