"""The batch driver's step: one batch that cannot be validated holds up no other."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from openbeepboop_server.dispatch.batches import BatchDriver
from openbeepboop_server.queue.batches import Advanced


class _Service:
    """Two batches to validate, the first of which fails; records what was done."""

    def __init__(self) -> None:
        self.validated: list[str] = []
        self.advanced = 0

    def active(self) -> list[tuple[str, str]]:
        return [("batch_broken", "validating"), ("batch_fine", "validating")]

    def validate(self, batch_id: str) -> list[str]:
        if batch_id == "batch_broken":
            raise RuntimeError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
        self.validated.append(batch_id)
        return ["m"]

    def advance(self) -> Advanced:
        self.advanced += 1
        return Advanced(cancelled_jobs=[], ended=[])


def test_a_batch_that_fails_to_validate_holds_up_no_other() -> None:
    woken: list[list[str]] = []
    context: Any = SimpleNamespace(
        wakeups=SimpleNamespace(jobs_available=woken.append),
        metrics=SimpleNamespace(submitted=SimpleNamespace(inc=lambda n: None)),
    )
    driver = BatchDriver.__new__(BatchDriver)
    driver._context = context
    service = _Service()
    driver._service = service  # type: ignore[assignment]
    asyncio.run(driver.step())
    assert service.validated == ["batch_fine"] and woken == [["m"]]
    assert service.advanced == 1  # running batches still moved on
