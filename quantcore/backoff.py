"""How quantcore waits between attempts, and how it names a failure in one line.

Shared by the exchange feed (reconnects) and the sinks (database/Redis retries), so
every retry in the system backs off the same way and logs failures the same way.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff, capped, minus up to ``jitter`` of it at random.

    The jitter spreads reconnects of many clients after a shared outage.
    """

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
        base = min(self.maximum, self.initial * self.factor ** min(attempt, 32))
        return base * (1 - self.jitter * random.random())


def describe(exc: BaseException) -> str:
    """One line for a log or a status event: the type and the first line of the message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
