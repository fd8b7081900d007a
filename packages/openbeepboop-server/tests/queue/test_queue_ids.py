"""Job ids and lease tokens: format, uniqueness, time order."""

from __future__ import annotations

import re

from openbeepboop_server.queue.ids import new_job_id, new_lease_token


def test_job_id_format() -> None:
    assert re.fullmatch(r"job-[0-9a-f]{32}", new_job_id())


def test_lease_token_format_fits_its_column() -> None:
    token = new_lease_token()
    assert re.fullmatch(r"lease-[0-9a-f]{44}", token)
    assert len(token) <= 64


def test_ids_are_unique_and_roughly_time_ordered() -> None:
    ids = [new_job_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    # The millisecond prefix never goes backwards (within one process's clock).
    prefixes = [job_id[4:16] for job_id in ids]
    assert prefixes == sorted(prefixes)
