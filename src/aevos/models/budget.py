"""Budgets and rate limits, reserved before a model call and shared by every process.

A scope (``tenant:acme``, ``workflow:acme/triage``, ``model:acme/intent``; rate limits are
the same names prefixed ``rate:``) has limits on calls, cost and tokens per window. Its
usage lives in one ``aevos_budgets`` row per window, ``window_start = floor(now / window) *
window``, created on first use (``ON CONFLICT DO NOTHING``), so a window rolls by itself.

The database hands out usage only with one atomic conditional UPDATE::

    UPDATE aevos_budgets SET calls_used = calls_used + :n, cost_used = cost_used + :c, ...
     WHERE scope = :s AND window_start = :w
       AND (calls_limit IS NULL OR calls_used + :n <= calls_limit)
       AND (cost_limit IS NULL OR cost_used + :c <= cost_limit) AND (tokens ... likewise)

so the total handed out, to all processes together, never exceeds a limit. A durable commit
costs ~70 us, more than the whole per-call budget of the gateway, so a process does not run
this UPDATE per call: it *leases* a chunk (``n`` calls' worth) and spends it locally under a
lock. A background thread tops the lease up when it falls below half a chunk, so callers
reach the database only when a lease runs dry (a window's first call, a burst). Calls are
only made against usage the database already counted as used, hence leasing cannot
overshoot either. It can refuse early while another process still holds an unspent chunk,
which is why chunks are capped at a share of the limit (5%), shrink to exactly what remains
near the limit, and are returned to the database when a process closes, when the window
rolls and after a second idle; a caller whose lease is empty waits for a refill already on
its way rather than being refused. ``Leasing(chunk=1)`` makes every call reserve in the
database itself (and disables refills).

What a call reserves is the budget logic's rule (:meth:`Scope.amounts`; the SQL above only
enforces it): in a scope that limits cost, the route's declared ``max_cost`` (an upper
bound); when the cost is not known in advance, an estimate, the route's ``cost_estimate``
(per model) or else the budget's; with neither, the call is refused with
:class:`UndeclaredCostError` before anything is reserved, never let through at no cost.
Tokens likewise (``max_tokens``, ``tokens_estimate``). A scope that does not limit a
dimension reserves what the route declares or estimates (or nothing) and only counts it.

After a call its reservation is settled to the actual cost and tokens the model reported
(a dimension it did not report is charged what was reserved), returning the unused part to
the local chunk. A call that failed gives its cost and tokens back (the call itself stays
counted); one that timed out keeps them (the model may still be running, and billing). A
call that costs more than it reserved (an estimate that was too low) is charged the excess:
it cannot be undone, but later calls are admitted only into what is left, and none once
the budget is over its limit. Hence the guarantee: the calls admitted never reserve more
than a limit, so the amount spent exceeds it by at most the excess (actual minus reserved)
of the calls that were in flight when the last call was admitted: nothing when
reservations are upper bounds (``max_cost``, or estimates that hold), whatever the
concurrency; one call's excess when calls are sequential. A process killed while holding a
chunk leaves it counted as used for the rest of the window: an undershoot, never an
overshoot.

Windows are fixed (not sliding): a rate limit of N per second can admit up to N calls at
the end of one window and N more at the start of the next.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import (
    BudgetExceededError,
    DefinitionError,
    LimitExceededError,
    RateLimitedError,
    UndeclaredCostError,
)
from ..storage import Store
from ..storage.budgets import EPS, Limits
from ..storage.budgets import Usage as Usage  # part of this module's API (gateway.usage)

log = logging.getLogger("aevos.gateway")

_DIMS = ("calls", "cost", "tokens")


@dataclass(frozen=True)
class Budget:
    """Limits per window of ``window`` seconds; None means unlimited. ``rate=True`` makes it a
    rate limit: refusals raise :class:`RateLimitedError` instead of BudgetExceededError.

    ``cost_estimate`` / ``tokens_estimate``: what a call reserves here when neither its route
    declares a ``max_cost`` / ``max_tokens`` nor estimates one; without them such a call is
    refused (:class:`UndeclaredCostError`). Kept in this process, like the budget itself.
    """

    calls: int | None = None
    cost: float | None = None
    tokens: int | None = None
    window: float = 86_400.0
    rate: bool = False
    cost_estimate: float | None = None
    tokens_estimate: int | None = None

    def __post_init__(self) -> None:
        if self.calls is None and self.cost is None and self.tokens is None:
            raise DefinitionError("a budget needs at least one of calls, cost or tokens")
        for name in (*_DIMS, "cost_estimate", "tokens_estimate"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise DefinitionError(f"budget {name} must be >= 0, not {value}")
        # An estimate is only ever reserved against a limit: one without is a mistake.
        for dim in ("cost", "tokens"):
            if getattr(self, f"{dim}_estimate") is not None and getattr(self, dim) is None:
                raise DefinitionError(f"budget {dim}_estimate needs a {dim} limit")
        if not self.window > 0:
            raise DefinitionError(f"budget window must be > 0 seconds, not {self.window}")

    def limit(self, dim: int) -> float | None:
        value = (self.calls, self.cost, self.tokens)[dim]
        return None if value is None else float(value)


@dataclass(frozen=True)
class Leasing:
    """How a process leases budget from the database.

    ``chunk``: calls' worth leased at a time; None adapts it: it quadruples while leases come
    faster than one per ``interval`` seconds and halves when they come 4x slower, up to
    ``max_chunk`` and never more than ``share`` of a limit. ``idle_return``: seconds after a
    scope's last call when its unspent chunk goes back to the database.
    """

    chunk: int | None = None
    max_chunk: int = 1024
    share: float = 0.05
    interval: float = 0.5
    idle_return: float = 1.0

    def __post_init__(self) -> None:
        if self.chunk is not None and self.chunk < 1:
            raise DefinitionError(f"leasing chunk must be >= 1, not {self.chunk}")
        if self.max_chunk < 1 or not 0 < self.share <= 1:
            raise DefinitionError("leasing max_chunk must be >= 1 and share within (0, 1]")


class Claim(Protocol):
    """What the calls of a route declare before they run, for budgets to reserve (a
    :class:`~aevos.models.routing.Route` is one; read as is, so a call builds nothing).

    ``max_cost`` / ``max_tokens``: upper bounds of one call (None: not known in advance);
    ``cost_estimate`` / ``tokens_estimate``: what to reserve when there is no bound (None:
    none configured for the model; a budget's own estimate may still apply).
    """

    @property
    def max_cost(self) -> float | None: ...
    @property
    def max_tokens(self) -> int | None: ...
    @property
    def cost_estimate(self) -> float | None: ...
    @property
    def tokens_estimate(self) -> int | None: ...


def window_start(now: float, window: float) -> float:
    return math.floor(now / window) * window


class Ledger:
    """Leases from and returns to the budget windows, one short unit of work each."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def set_limits(self, scope: str, start: float, budget: Budget) -> None:
        """Create the window's row, or move its limits to ``budget``'s (a reconfiguration)."""
        with self.store.transaction() as uow:
            uow.budgets.set_limits(scope, start, _limits(budget), time.time())

    def lease(
        self,
        scope: str,
        start: float,
        budget: Budget,
        want: int,
        per_call: Sequence[float],
        held: Sequence[float],
    ) -> tuple[int, list[float], int | None, Any]:
        """Lease up to ``want`` calls' worth: enough that the local pool ``held`` covers
        ``k * per_call`` in every dimension, for the largest ``k <= want`` that fits.

        Returns ``(k, granted, None, None)``; ``k == 0`` when not even one call fits, with
        the binding dimension and the row (for the error message) in place of the Nones.
        """
        now = time.time()
        with self.store.transaction() as uow:
            windows = uow.budgets
            k = want
            for _ in range(8):
                granted = [max(0.0, k * per_call[d] - held[d]) for d in range(3)]
                if windows.take(scope, start, granted, now):
                    return k, granted, None, None
                row = windows.usage(scope, start)
                if row is None:
                    windows.open(scope, start, _limits(budget), now)
                    continue
                fits, binding = self._fits(row, per_call, held)
                if fits < 1:
                    return 0, [0.0, 0.0, 0.0], binding, row
                # Only reachable on PostgreSQL when another process leased in between (on
                # SQLite this transaction holds the write lock): try again with what fits.
                k = min(k, fits)
            return 0, [0.0, 0.0, 0.0], 0, None

    @staticmethod
    def _fits(row: Usage, per_call: Sequence[float], held: Sequence[float]) -> tuple[int, int]:
        limits = (row.calls_limit, row.cost_limit, row.tokens_limit)
        used = (row.calls_used, row.cost_used, row.tokens_used)
        best, binding = 1 << 62, 0
        for d in range(3):
            limit = limits[d]
            if limit is None or per_call[d] <= 0:
                continue
            room = float(limit) - float(used[d]) + held[d] + (EPS if d == 1 else 0.0)
            fits = math.floor(room / per_call[d]) if room > 0 else 0
            if fits < best:
                best, binding = fits, d
        if best == 1 << 62:
            # Nothing needed in a limited dimension, so the refusal was a pool overdrawn by a
            # call that cost more than it reserved: give it time to be settled.
            for d in range(3):
                limit = limits[d]
                if limit is not None and float(used[d]) - held[d] > float(limit) + EPS:
                    return 0, d
            return 1, 0
        return best, binding

    def give_back(self, scope: str, start: float, amounts: Sequence[float]) -> None:
        """Return unspent usage (negative amounts charge an overrun)."""
        with self.store.transaction() as uow:
            uow.budgets.give_back(scope, start, amounts, time.time())

    def usage(self, scope: str, start: float) -> Usage | None:
        with self.store.reading() as uow:
            return uow.budgets.usage(scope, start)


def _limits(budget: Budget) -> Limits:
    return Limits(budget.window, budget.calls, budget.cost, budget.tokens)


class Scope:
    """One configured scope in this process: its budget and the locally held lease.

    Callers spend from the held lease under a lock and touch the database only when it is
    empty (the first call of a window, or a burst faster than the refill). Otherwise, when
    a lease falls below half a chunk, the gateway's budget thread tops it up (``refill``)
    without holding the lock, so callers keep spending meanwhile.
    """

    def __init__(
        self,
        name: str,
        budget: Budget,
        ledger: Ledger,
        leasing: Leasing,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.name = name
        self.budget = budget
        self.ledger = ledger
        self.leasing = leasing
        self._wake = wake
        self._lock = threading.Lock()
        self._landed = threading.Condition(self._lock)  # a background refill finished
        self._window = -1.0
        self._held = [0.0, 0.0, 0.0]  # calls, cost, tokens leased and not yet spent
        # Only limited dimensions need a lease to spend from; the others are counted.
        self._checked = tuple(d for d in range(3) if budget.limit(d) is not None)
        self._cost_estimate = budget.cost_estimate
        self._tokens_estimate = budget.tokens_estimate
        self._chunk = 1
        self._per_call: tuple[float, float, float] = (1.0, 0.0, 0.0)
        self._leased_at = 0.0
        self._used_at = 0.0
        self._refilling = False  # a refill was asked for
        self._inflight = False  # ... and is running, outside the lock
        self._retired = False  # replaced or closed: late refills go straight back
        self._returns: list[tuple[float, list[float]]] = []  # rolled windows' leftovers
        self.leases = 0  # database leases taken (metrics, tests)

    def amounts(self, claim: Claim, model: str) -> tuple[float, float]:
        """The cost and tokens one call of ``model`` reserves here: the declared bound, else
        the route's estimate, else this budget's. A limited dimension with none of them
        refuses the call (:class:`UndeclaredCostError`): reserving nothing would let any
        number of concurrent calls through. An unlimited dimension reserves what the route
        declares or estimates (or nothing), and is only counted."""
        # On every call's path: plain branches, no allocation.
        cost = claim.max_cost
        if cost is None:
            cost = claim.cost_estimate
            if cost is None:
                cost = self._cost_estimate
                if cost is None:
                    if 1 in self._checked:
                        raise self._undeclared(model, "cost")
                    cost = 0.0
        tokens = claim.max_tokens
        if tokens is None:
            tokens = claim.tokens_estimate
            if tokens is None:
                tokens = self._tokens_estimate
                if tokens is None:
                    if 2 in self._checked:
                        raise self._undeclared(model, "tokens")
                    tokens = 0
        return cost, tokens

    def take(self, cost: float, tokens: float, now: float) -> float:
        """Spend one call's reservation; returns its window (for ``settle``). Raises
        BudgetExceededError / RateLimitedError when the database has nothing left."""
        window = self.budget.window
        start = math.floor(now / window) * window
        per_call = (1.0, cost, tokens)
        with self._lock:
            if start > self._window:
                self._roll(start)
            start = self._window  # never back: a call racing a roll joins the new window
            held = self._held
            while True:
                for d in self._checked:
                    if held[d] + EPS < per_call[d]:
                        break
                else:
                    held[0] -= 1.0
                    held[1] -= cost
                    held[2] -= tokens
                    self._used_at = now
                    self._per_call = per_call
                    if not self._refilling and self._chunk > 1:
                        half = self._chunk // 2
                        for d in self._checked:
                            if held[d] < per_call[d] * half:
                                self._refilling = True
                                self._wake()
                                break
                    return start
                if not self._inflight:
                    break
                # A refill is on its way: refusing now would strand what it brings.
                self._landed.wait(5.0)
                held = self._held
                if self._window != start:
                    return self.take(cost, tokens, time.time())  # rare: it rolled meanwhile
            # Nothing left here: lease now, holding the lock (other callers would wait for
            # this lease anyway).
            k, granted, binding, row = self.ledger.lease(
                self.name, start, self.budget, self._next_chunk(now, per_call), per_call, held
            )
            if k == 0:
                self._refilling = False  # nothing may be leased after the last refusal
                raise self._refusal(binding, row, start)
            self.leases += 1
            self._leased_at = now
            for d in range(3):
                held[d] += granted[d] - per_call[d]
            self._used_at = now
            self._per_call = per_call
            return start

    def refill(self, now: float) -> None:
        """Top the lease up to a chunk (the budget thread, when it ran low)."""
        with self._lock:
            if not self._refilling or self._retired:
                self._refilling = False
                return
            self._inflight = True
            start, per_call, held = self._window, self._per_call, list(self._held)
            want = self._next_chunk(now, per_call)
        k, granted = 0, [0.0, 0.0, 0.0]
        try:
            k, granted, _, _ = self.ledger.lease(
                self.name, start, self.budget, want, per_call, held
            )
        finally:
            with self._lock:
                self._refilling = self._inflight = False
                landed = k > 0 and start == self._window and not self._retired
                if landed:
                    self.leases += 1
                    self._leased_at = now
                    for d in range(3):
                        self._held[d] += granted[d]
                self._landed.notify_all()
        if k > 0 and not landed:
            self.ledger.give_back(self.name, start, granted)  # the window rolled meanwhile

    def settle(self, start: float, delta: Sequence[float]) -> None:
        """Give ``delta`` (reserved minus actual, per dimension) back to the lease it came
        from; to the database directly if that window has rolled since."""
        if not any(delta):
            return
        with self._lock:
            if start == self._window:
                for d in range(3):
                    self._held[d] += delta[d]
                return
        self.ledger.give_back(self.name, start, delta)

    def give_back(self) -> None:
        """Return the unspent lease to the database (close, reconfiguration)."""
        with self._lock:
            self._retired = True
            returns, self._returns = self._returns, []
            if self._window >= 0:
                returns.append((self._window, self._held))
            self._held = [0.0, 0.0, 0.0]
        self._return(returns)

    def housekeep(self, now: float) -> None:
        """The budget thread's rounds: refill, return rolled leftovers and idle leases."""
        if self._refilling:
            self.refill(now)
        if self._returns:
            with self._lock:
                returns, self._returns = self._returns, []
            self._return(returns)
        if now - self._used_at >= self.leasing.idle_return and any(self._held):
            with self._lock:
                if now - self._used_at < self.leasing.idle_return or self._window < 0:
                    return
                returns = [(self._window, self._held)]
                self._held = [0.0, 0.0, 0.0]
                self._chunk = 1
            self._return(returns)

    # -- internals ----------------------------------------------------------------------------

    def _return(self, returns: list[tuple[float, list[float]]]) -> None:
        for start, amounts in returns:
            if any(abs(v) > EPS for v in amounts):
                self.ledger.give_back(self.name, start, amounts)

    def _roll(self, start: float) -> None:
        # Lock held. The leftover goes back from the budget thread, off the caller's path;
        # the chunk size learned so far carries over to the new window.
        if self._window >= 0 and any(abs(v) > EPS for v in self._held):
            self._returns.append((self._window, self._held))
            self._wake()
        self._held = [0.0, 0.0, 0.0]
        self._window = start

    def _next_chunk(self, now: float, per_call: Sequence[float]) -> int:
        leasing = self.leasing
        if leasing.chunk is not None:
            return leasing.chunk
        since = now - self._leased_at
        if since < leasing.interval:
            # Quadrupled: a busy scope reaches a chunk that lasts an interval in a few
            # leases, each of which a caller may have waited for.
            self._chunk = min(self._chunk * 4, leasing.max_chunk)
        elif since > 4 * leasing.interval:
            self._chunk = max(1, self._chunk // 2)
        chunk = self._chunk
        # Never hold more than a share of a limit: other processes must not starve while
        # this one sits on a large unspent chunk.
        for d in range(3):
            limit = self.budget.limit(d)
            if limit is not None and per_call[d] > 0:
                chunk = min(chunk, max(1, math.floor(limit * leasing.share / per_call[d])))
        return chunk

    def _undeclared(self, model: str, dim: str) -> UndeclaredCostError:
        return UndeclaredCostError(
            f"model {model!r} declares no {dim} per call and budget {self.name} limits {dim}: "
            f"set the route's max_{dim} (an upper bound) or a {dim}_estimate (on the route, "
            f"or on the budget) so that the call can be reserved before it runs",
            scope=self.name,
            limit=dim,
            model=model,
        )

    def _refusal(self, binding: int | None, row: Any, start: float) -> LimitExceededError:
        dim = _DIMS[binding or 0]
        budget = self.budget
        limit = budget.limit(binding or 0)
        shown = f"{limit:g}" if limit is not None else "?"
        retry = start + budget.window - time.time()
        if budget.rate:
            return RateLimitedError(
                f"rate limit {self.name} reached: {shown} {dim} per {budget.window:g}s; "
                f"retry in {max(0.0, retry):.2f}s",
                scope=self.name,
                limit=dim,
            )
        used = "" if row is None else f"; {float(getattr(row, f'{dim}_used')):g} used"
        return BudgetExceededError(
            f"budget {self.name} exhausted: {dim} limit {shown} per {budget.window:g}s window"
            f"{used}; the window rolls in {max(0.0, retry):.0f}s",
            scope=self.name,
            limit=dim,
        )


# One call's reservation: per scope, its window and the cost and tokens it reserved there.
Reservation = list[tuple[Scope, float, float, float]]


class Budgets:
    """The scopes configured in one gateway, and reservations across several at once."""

    def __init__(self, store: Store, leasing: Leasing | None = None) -> None:
        self.ledger = Ledger(store)
        self.leasing = leasing or Leasing()
        self._scopes: dict[str, Scope] = {}
        self._lookup: dict[tuple[str, str | None, str], tuple[Scope, ...]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def scope_name(
        tenant: str, *, workflow: str | None = None, model: str | None = None, rate: bool = False
    ) -> str:
        if workflow is not None and model is not None:
            raise DefinitionError("a budget is per tenant, per workflow or per model, not both")
        if workflow is not None:
            name = f"workflow:{tenant}/{workflow}"
        elif model is not None:
            name = f"model:{tenant}/{model}"
        else:
            name = f"tenant:{tenant}"
        return f"rate:{name}" if rate else name

    def configure(self, name: str, budget: Budget) -> None:
        with self._lock:
            old = self._scopes.get(name)
            if old is not None:
                old.give_back()
            self.ledger.set_limits(name, window_start(time.time(), budget.window), budget)
            self._scopes[name] = Scope(name, budget, self.ledger, self.leasing, self._request)
            self._lookup = {}
        self._start()

    def remove(self, name: str) -> None:
        with self._lock:
            old = self._scopes.pop(name, None)
            if old is not None:
                old.give_back()
            self._lookup = {}

    def get(self, name: str) -> Scope | None:
        return self._scopes.get(name)

    def scopes(self, tenant: str, workflow: str | None, model: str) -> tuple[Scope, ...]:
        """The scopes a call of ``model`` by ``tenant`` in ``workflow`` spends from."""
        if not self._scopes:
            return ()
        key = (tenant, workflow, model)
        found = self._lookup.get(key)
        if found is None:
            names = [f"tenant:{tenant}", f"model:{tenant}/{model}"]
            if workflow is not None:
                names.append(f"workflow:{tenant}/{workflow}")
            names += [f"rate:{name}" for name in names]
            with self._lock:
                found = tuple(self._scopes[n] for n in sorted(names) if n in self._scopes)
                self._lookup[key] = found
        return found

    def reserve(self, scopes: Sequence[Scope], claim: Claim, model: str, now: float) -> Reservation:
        """Reserve one call of ``model`` in every scope, or in none (raising the first
        refusal)."""
        # Every scope's amounts first: an undeclared cost is refused before anything is taken.
        amounts = [scope.amounts(claim, model) for scope in scopes]
        taken: Reservation = []
        try:
            for scope, (cost, tokens) in zip(scopes, amounts, strict=True):
                taken.append((scope, scope.take(cost, tokens, now), cost, tokens))
        except BaseException:
            for scope, start, cost, tokens in taken:
                scope.settle(start, (1.0, cost, tokens))
            raise
        return taken

    @staticmethod
    def settle(reserved: Reservation, cost: float | None, tokens: float | None) -> None:
        """Settle a call that answered to the cost and tokens it reported: the unused part of
        each reservation goes back, an excess is charged. None (not reported) charges what
        was reserved."""
        for scope, start, held_cost, held_tokens in reserved:
            scope.settle(
                start,
                (
                    0.0,
                    0.0 if cost is None else held_cost - cost,
                    0.0 if tokens is None else held_tokens - tokens,
                ),
            )

    @staticmethod
    def release(reserved: Reservation) -> None:
        """A call that failed without spending: its cost and tokens go back, the call itself
        stays counted."""
        for scope, start, cost, tokens in reserved:
            scope.settle(start, (0.0, cost, tokens))

    def _request(self) -> None:
        self._wake.set()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._loop, name="aevos-gateway-budgets", daemon=True
                )
                self._thread.start()

    def _loop(self) -> None:
        # Woken when a lease runs low or a window rolls; otherwise a look every quarter
        # second for idle leases to return.
        while not self._stop.is_set():
            self._wake.wait(0.25)
            self._wake.clear()
            self.housekeep(time.time())

    def housekeep(self, now: float) -> None:
        for scope in list(self._scopes.values()):
            try:
                scope.housekeep(now)
            except Exception:
                # The database may be briefly unreachable; callers lease for themselves
                # meanwhile, and leftovers are returned on a later round.
                log.warning("budget housekeeping of %s failed", scope.name, exc_info=True)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=10)
        for scope in list(self._scopes.values()):
            scope.give_back()

    def usage(self, name: str) -> Usage | None:
        scope = self._scopes.get(name)
        if scope is None:
            return None
        return self.ledger.usage(name, window_start(time.time(), scope.budget.window))
