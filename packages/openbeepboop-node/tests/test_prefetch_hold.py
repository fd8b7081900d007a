"""A node that has just started a job sends its request before it fetches a lease to wait behind it.

LiteLLM builds a request in a worker thread and the node's own fetch would
take the interpreter from it; the fetch is held until the request is out,
for at most ``fetch_linger`` (:mod:`openbeepboop_node.fetching`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from conditions import wait_for
from fake_queue import FETCH, FakeQueue
from openbeepboop_node.inference import Inference
from openbeepboop_node.model_routes import ModelRoute
from openbeepboop_node.worker import Node
from openbeepboop_schemas import ChatCompletion, ChatCompletionRequest
from openbeepboop_testkit.standin import StandinLLM


class SlowToPrepare(Inference):
    """The real call, after ``prepare`` seconds of preparing it (LiteLLM's work, stretched).

    ``tell`` False: the request's departure is never reported, as for a
    provider whose calls LiteLLM does not report.
    """

    def __init__(self, prepare: float, *, tell: bool = True) -> None:
        super().__init__()
        self.prepare = prepare
        self.tell = tell
        #: When each request was reported sent (``time.monotonic``, as the fake's log).
        self.sent_at: list[float] = []

    async def complete(
        self,
        route: ModelRoute,
        request: ChatCompletionRequest,
        job_id: str | None = None,
        *,
        on_sent: Callable[[], None] | None = None,
    ) -> ChatCompletion:
        await asyncio.sleep(self.prepare)
        assert on_sent is not None

        def sent() -> None:
            self.sent_at.append(time.monotonic())
            on_sent()

        return await super().complete(route, request, job_id, on_sent=sent if self.tell else None)


def fetched_at(fake: FakeQueue) -> list[float]:
    with fake.lock:
        return [at for path, at in fake.attempts if path == FETCH]


async def test_the_next_fetch_waits_for_the_running_jobs_request_to_leave(
    fake: FakeQueue, llm: StandinLLM, make_node: Callable[..., Node]
) -> None:
    node = make_node(concurrency=1, fetch_linger=1.0)  # prefetch on: one lease may wait
    inference = node.inference = SlowToPrepare(0.3)
    fake.add_job("the only job")
    task = asyncio.create_task(node.run())
    await wait_for(lambda: len(fake.results()) == 1, what="the result")
    await wait_for(lambda: len(fetched_at(fake)) >= 2, what="the node's next fetch")
    node.stop()
    await task
    [sent] = inference.sent_at
    first, second = fetched_at(fake)[:2]
    # Without the hold the node asks for its waiting lease at once, while
    # the job's request is still being prepared.
    assert first < sent < second
    assert len(llm.calls()) == 1


async def test_a_request_that_is_never_reported_holds_the_fetch_only_for_the_linger(
    fake: FakeQueue, llm: StandinLLM, make_node: Callable[..., Node]
) -> None:
    node = make_node(concurrency=1, fetch_linger=0.2, shutdown_grace=0)
    inference = node.inference = SlowToPrepare(30.0, tell=False)
    fake.add_job("the only job")
    task = asyncio.create_task(node.run())
    await wait_for(lambda: len(fetched_at(fake)) >= 2, what="the node's next fetch")
    first, second = fetched_at(fake)[:2]
    assert second - first >= 0.2
    assert not llm.calls() and not inference.sent_at  # still preparing
    node.stop()
    await task
