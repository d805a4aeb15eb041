"""Bounded, jittered exponential backoff for reconnecting to the broker and retrying the database."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """``next()`` gives 0.5, ~1, ~2, ... up to ``maximum`` seconds; ``reset()`` after a success.

    Each delay is drawn from [d/2, d] ("equal jitter") so many workers that lost the same broker or
    database do not all come back in the same instant, and none retries in a tight loop.
    """

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    attempts: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def next(self) -> float:
        ceiling = min(self.maximum, self.initial * self.factor ** min(self.attempts, 64))
        self.attempts += 1
        return self.rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempts = 0
