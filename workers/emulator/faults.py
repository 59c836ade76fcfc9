"""Fault injection for the RunPod emulator: which request or job misbehaves, and how.

A :class:`Faults` holds one :class:`FaultSpec` (rate, optional cap on how many times it fires)
per kind, and a seeded random generator so a run is reproducible. Two families:

- HTTP faults, drawn per API request: ``429`` (rate limited, optional ``Retry-After``) and
  ``5xx`` (500/502/503; on ``/run`` the job is *not* created). ``ghost``, on ``/run`` only:
  the job *is* created and queued, yet the reply is a 502 (the cloud's ambiguous failure).
- Job faults, drawn when a worker picks a job up (first hit wins, in this order):
  ``failed`` (FAILED with a retryable structured error), ``fatal`` (FAILED, not retryable),
  ``crash`` (FAILED with the runpod SDK's uncaught-exception JSON), ``timeout`` (TIMED_OUT),
  ``no_output`` (COMPLETED without ``output``), ``expire`` (result deleted at once: 404),
  ``slow`` (runs ``slow_factor`` times longer).

:class:`RateLimits` answers 429 for real, once a route got more requests than its budget
within the window (RunPod's published per-endpoint budgets are :data:`RUNPOD_RATE_LIMITS`).

Spec strings, as given to ``aat emulate --faults``: ``"429=0.1,5xx=0.05,failed=1:2"`` means
10 % of requests get 429, 5 % get a 5xx, and the first two jobs fail (rate 1, at most 2).
"""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass, field

HTTP_KINDS = ("429", "5xx")
JOB_KINDS = ("failed", "fatal", "crash", "timeout", "no_output", "expire", "slow")
ALL_KINDS = (*HTTP_KINDS, "ghost", *JOB_KINDS)


@dataclass
class FaultSpec:
    rate: float = 0.0
    limit: int | None = None  # at most this many firings; None = unbounded
    fired: int = 0

    def draw(self, rng: random.Random) -> bool:
        if self.rate <= 0.0 or (self.limit is not None and self.fired >= self.limit):
            return False
        if self.rate >= 1.0 or rng.random() < self.rate:
            self.fired += 1
            return True
        return False


@dataclass
class Faults:
    """Fault rates of one emulated endpoint (all zero = a well-behaved endpoint)."""

    specs: dict[str, FaultSpec] = field(default_factory=dict)
    seed: int = 0
    slow_factor: float = 4.0
    retry_after_s: float | None = None  # Retry-After header value on injected 429s
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        unknown = set(self.specs) - set(ALL_KINDS)
        if unknown:
            raise ValueError(
                f"unknown fault kind(s) {sorted(unknown)}; known: {', '.join(ALL_KINDS)}"
            )
        self._rng = random.Random(self.seed)

    @classmethod
    def parse(cls, spec: str | None, **kwargs: float | int | None) -> Faults:
        """Build from ``"kind=rate[:limit],..."`` (empty or None = no faults)."""
        specs: dict[str, FaultSpec] = {}
        for part in (spec or "").split(","):
            part = part.strip()
            if not part:
                continue
            kind, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"fault {part!r} needs a rate, e.g. {part}=0.1")
            rate_s, _, limit_s = value.partition(":")
            try:
                rate = float(rate_s)
                limit = int(limit_s) if limit_s else None
            except ValueError as exc:
                raise ValueError(f"fault {part!r}: rate must be a number, limit an integer") from exc
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault {part!r}: rate must be between 0 and 1")
            specs[kind.strip()] = FaultSpec(rate=rate, limit=limit)
        return cls(specs=specs, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def transient(cls, rate: float, seed: int = 0) -> Faults:
        """``rate`` of trouble spread over the kinds a client must survive by retrying."""
        share = rate / 5
        kinds = ("429", "5xx", "failed", "no_output", "timeout")
        return cls(specs={k: FaultSpec(rate=share) for k in kinds}, seed=seed)

    def draw_http(self) -> str | None:
        """The HTTP fault for this request, if any."""
        for kind in HTTP_KINDS:
            spec = self.specs.get(kind)
            if spec is not None and spec.draw(self._rng):
                return kind
        return None

    def draw(self, kind: str) -> bool:
        """Whether the one fault ``kind`` fires now."""
        spec = self.specs.get(kind)
        return spec is not None and spec.draw(self._rng)

    def draw_job(self) -> str | None:
        """The job fault for a job a worker just picked up, if any."""
        for kind in JOB_KINDS:
            spec = self.specs.get(kind)
            if spec is not None and spec.draw(self._rng):
                return kind
        return None

    def fired(self) -> dict[str, int]:
        return {kind: spec.fired for kind, spec in self.specs.items() if spec.fired}


# Requests per 10 s per endpoint, as RunPod documents them.
RUNPOD_RATE_LIMITS = {"run": 1000, "runsync": 2000, "status": 2000, "stream": 2000,
                      "cancel": 100, "purge-queue": 2}


class RateLimits:
    """Sliding-window request budgets per route (``{"status": 50}`` per ``window_s``)."""

    def __init__(self, budgets: dict[str, int] | None, window_s: float = 10.0) -> None:
        self.budgets = dict(budgets or {})
        self.window_s = window_s
        self._seen: dict[str, deque[float]] = {route: deque() for route in self.budgets}

    def allow(self, route: str) -> bool:
        """Count a request to ``route``; False when it is over budget (answer 429)."""
        budget = self.budgets.get(route)
        if budget is None:
            return True
        now, seen = time.monotonic(), self._seen[route]
        while seen and now - seen[0] >= self.window_s:
            seen.popleft()
        if len(seen) >= budget:
            return False
        seen.append(now)
        return True

    def retry_after(self, route: str) -> float:
        """Seconds until the oldest request of ``route`` leaves the window."""
        seen = self._seen.get(route)
        if not seen:
            return 0.0
        return max(0.0, self.window_s - (time.monotonic() - seen[0]))
