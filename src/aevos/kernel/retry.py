"""Per-step retry policy: how many attempts, how long between them, which errors retry."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..errors import DefinitionError


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full-range jitter, in the manner of Temporal's RetryPolicy.

    The delay before attempt ``n + 1`` (after ``n`` failures) is
    ``min(max_interval, initial_interval * backoff ** (n - 1))`` scaled by a random factor
    in ``[1 - jitter, 1 + jitter]`` and clamped to ``max_interval``. Jitter spreads retries of
    many runs that failed together, so they do not hammer a recovering dependency in step.
    """

    max_attempts: int = 1
    initial_interval: float = 1.0
    backoff: float = 2.0
    max_interval: float = 60.0
    jitter: float = 0.1
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    non_retryable: tuple[type[BaseException], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise DefinitionError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_interval < 0 or self.max_interval < 0:
            raise DefinitionError("retry intervals must be >= 0")
        if self.backoff < 1:
            raise DefinitionError(f"backoff must be >= 1, got {self.backoff}")
        if not 0 <= self.jitter <= 1:
            raise DefinitionError(f"jitter must be within [0, 1], got {self.jitter}")

    def base_delay(self, failures: int) -> float:
        """Delay before the next attempt after ``failures`` failed attempts, without jitter."""
        if failures < 1:
            return 0.0
        # Cap the exponent so a large attempt count cannot overflow a float.
        exponent = min(failures - 1, 1000)
        try:
            raw = self.initial_interval * self.backoff**exponent
        except OverflowError:
            raw = self.max_interval
        return min(self.max_interval, raw)

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        base = self.base_delay(failures)
        if self.jitter == 0 or base == 0:
            return base
        factor = 1 + (rng or random).uniform(-self.jitter, self.jitter)
        return min(self.max_interval, max(0.0, base * factor))

    def should_retry(self, error: BaseException, failures: int) -> bool:
        """Whether another attempt follows ``failures`` failed attempts ending in ``error``."""
        if failures >= self.max_attempts:
            return False
        if isinstance(error, self.non_retryable):
            return False
        return isinstance(error, self.retry_on)


def retries(
    max_attempts: int = 3,
    *,
    initial_interval: float = 1.0,
    backoff: float = 2.0,
    max_interval: float = 60.0,
    jitter: float = 0.1,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    non_retryable: tuple[type[BaseException], ...] = (),
) -> RetryPolicy:
    """Shorthand used by ``@app.step(retries=...)`` when given an int."""
    return RetryPolicy(
        max_attempts=max_attempts,
        initial_interval=initial_interval,
        backoff=backoff,
        max_interval=max_interval,
        jitter=jitter,
        retry_on=retry_on,
        non_retryable=non_retryable,
    )


def as_retry_policy(value: int | RetryPolicy) -> RetryPolicy:
    """``@app.step(retries=...)``'s value as a policy: an int is a number of attempts."""
    if isinstance(value, RetryPolicy):
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise DefinitionError(f"retries must be an int or a RetryPolicy, got {value!r}")
    return retries(value)
