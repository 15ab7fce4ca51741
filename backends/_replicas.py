"""Client-side balancing over several OpenAI-compatible replicas of one model.

Choice: a request with an affinity key goes to the replica that key was pinned to, while that
replica is healthy (one problem's rollouts share a prompt prefix, so they hit one prefix
cache). Anything else goes to the healthy replica with the fewest requests in flight (ties: the
one that has served fewest), and a new affinity key is pinned to it. A replica that refuses
connections is unhealthy for a cool-down that doubles with each consecutive failure; keys
pinned to it move to the replica that takes their next request. When every replica is cooling
down, the one back soonest is tried anyway: cool-down steers traffic, it never blocks it.

Health is learnt passively from requests; there is no background prober. Not covered: load
read from `/metrics`, weighted replicas.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from ._retry import RetryPolicy

__all__ = ["Replica", "ReplicaPool", "normalize_base_url"]

MAX_AFFINITY_KEYS = 65536  # least recently used keys are forgotten beyond this


def normalize_base_url(url: str) -> tuple[str, str]:
    """`(root, api)` for a base URL given with or without `/v1`: `/tokenize` lives under the
    root, `/chat/completions` under the api prefix."""
    url = url.strip().rstrip("/")
    if not url:
        raise ValueError("a base URL must not be empty")
    if "://" not in url:
        url = "http://" + url
    scheme = url.split("://", 1)[0].lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"base URL must be http(s), got {url!r}")
    root = url[: -len("/v1")] if url.endswith("/v1") else url
    return root, root + "/v1"


@dataclass(eq=False, slots=True)
class Replica:
    root: str
    api: str
    in_flight: int = 0
    served: int = 0
    failures: int = 0  # consecutive connection failures
    down_until: float = 0.0


class ReplicaPool:
    def __init__(
        self,
        urls: Sequence[str],
        policy: RetryPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError("at least one base URL is needed")
        self.replicas = [Replica(*normalize_base_url(u)) for u in urls]
        roots = [r.root for r in self.replicas]
        if len(set(roots)) != len(roots):
            raise ValueError(f"duplicate base URLs: {roots}")
        self._policy = policy
        self._clock = clock
        self._pinned: OrderedDict[str, Replica] = OrderedDict()

    def healthy(self, replica: Replica) -> bool:
        return replica.down_until <= self._clock()

    def has_healthy(self) -> bool:
        return any(self.healthy(r) for r in self.replicas)

    def pick(self, affinity: str | None = None) -> Replica:
        if affinity is not None:
            pinned = self._pinned.get(affinity)
            if pinned is not None and self.healthy(pinned):
                self._pinned.move_to_end(affinity)
                return pinned
        live = [r for r in self.replicas if self.healthy(r)]
        if live:
            chosen = min(live, key=lambda r: (r.in_flight, r.served))
        else:
            chosen = min(self.replicas, key=lambda r: r.down_until)
        if affinity is not None:
            self._pinned[affinity] = chosen
            self._pinned.move_to_end(affinity)
            if len(self._pinned) > MAX_AFFINITY_KEYS:
                self._pinned.popitem(last=False)
        return chosen

    def pinned(self, affinity: str) -> Replica | None:
        return self._pinned.get(affinity)

    def connect_failed(self, replica: Replica) -> None:
        replica.failures += 1
        replica.down_until = self._clock() + self._policy.cooldown(replica.failures)

    def reachable(self, replica: Replica) -> None:
        replica.failures = 0
        replica.down_until = 0.0

    @contextmanager
    def lease(self, replica: Replica) -> Iterator[Replica]:
        replica.in_flight += 1
        replica.served += 1
        try:
            yield replica
        finally:
            replica.in_flight -= 1
