"""The status cache: one build per period, shared by concurrent requests."""

from __future__ import annotations

import asyncio
import threading

from openbeepboop_schemas import PoolStatus
from openbeepboop_server.dispatch.status_cache import StatusCache


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_concurrent_requests_share_one_build_and_it_expires() -> None:
    builds: list[int] = []
    release = threading.Event()
    clock = _Clock()
    cache = StatusCache(ttl=2.0, clock=clock)

    def build() -> PoolStatus:
        builds.append(1)
        release.wait(10)
        return PoolStatus(generated_at=len(builds), window_seconds=60, node_seen_seconds=60)

    async def scenario() -> list[bytes]:
        waiting = [asyncio.ensure_future(cache.get(build)) for _ in range(5)]
        while not builds:  # the first request is building; the other four wait for it
            await asyncio.sleep(0.001)
        release.set()
        bodies = await asyncio.gather(*waiting)
        clock.now = 1.9
        bodies.append(await cache.get(build))
        clock.now = 2.1
        bodies.append(await cache.get(build))
        return bodies

    bodies = asyncio.run(scenario())
    assert len(builds) == 2
    first = PoolStatus.model_validate_json(bodies[0])
    assert all(body == bodies[0] for body in bodies[:6]) and first.generated_at == 1
    assert PoolStatus.model_validate_json(bodies[6]).generated_at == 2
