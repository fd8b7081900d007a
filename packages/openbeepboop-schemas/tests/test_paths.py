"""The contract's paths: one definition, ids escaped into one segment."""

from __future__ import annotations

import openbeepboop_schemas as schemas
from openbeepboop_schemas import paths


def test_every_path_is_exported_from_the_package() -> None:
    defined = {name for name in vars(paths) if name.endswith("_PATH")}
    assert defined <= set(schemas.__all__)
    assert all(getattr(schemas, name) == getattr(paths, name) for name in defined)


def test_job_paths_fill_the_route_pattern() -> None:
    assert schemas.job_path("job-abc") == "/v1/jobs/job-abc"
    assert schemas.job_cancel_path("job-abc") == "/v1/jobs/job-abc/cancel"


def test_an_id_cannot_leave_its_segment() -> None:
    assert schemas.job_path("../models") == "/v1/jobs/..%2Fmodels"
    assert schemas.job_cancel_path("a/b?c") == "/v1/jobs/a%2Fb%3Fc/cancel"
