"""Every HTTP path of the contract, defined once for server, node, client and bench.

A path with a ``{job_id}`` placeholder is a Starlette route pattern as it
stands; :func:`job_path` and :func:`job_cancel_path` fill it in for a caller.
"""

from __future__ import annotations

from urllib.parse import quote

# What users call (USER and ADMIN keys).
#: Submit one job.
CHAT_COMPLETIONS_PATH = "/v1/chat/completions"
#: Submit many jobs in one call and one transaction.
BULK_SUBMIT_PATH = "/v1/chat/completions/bulk"
#: Poll (or long-poll) many jobs at once.
POLL_PATH = "/v1/results/poll"
#: The caller's jobs, newest first.
JOBS_PATH = "/v1/jobs"
#: One job (route pattern).
JOB_PATH = "/v1/jobs/{job_id}"
#: Cancel one job (route pattern).
JOB_CANCEL_PATH = "/v1/jobs/{job_id}/cancel"
#: Models that nodes seen recently can serve.
MODELS_PATH = "/v1/models"

# What nodes call (NODE and ADMIN keys).
#: Claim leases, long-polling.
FETCH_PATH = "/internal/queue/fetch"
#: Deliver results or errors for held leases.
QUEUE_SUBMIT_PATH = "/internal/queue/submit"
#: Extend held leases.
HEARTBEAT_PATH = "/internal/queue/heartbeat"
#: Long-poll until one of the held leases is cancelled or lost (a cancel reaches a running job).
LEASE_WATCH_PATH = "/internal/queue/watch"

# Open to anyone, or to operators.
#: Liveness and database reachability (no key).
HEALTHZ_PATH = "/healthz"
#: The OpenAPI document (no key).
OPENAPI_PATH = "/openapi.json"
#: Prometheus metrics (ADMIN or METRICS key).
METRICS_PATH = "/metrics"
#: Usage per key: jobs by final status, tokens, LLM seconds (USER: its own; ADMIN: all).
USAGE_PATH = "/v1/usage"
#: The pool at a glance as JSON: queues, nodes, throughput, failures (ADMIN or METRICS key).
STATUS_PATH = "/v1/status"
#: The status page (no key to load it; it holds no data and asks for a key).
STATUS_PAGE_PATH = "/status"
#: The status page's script and style sheet (no key), served from the package.
STATUS_SCRIPT_PATH = "/status/status.js"
STATUS_STYLE_PATH = "/status/status.css"


def job_path(job_id: str) -> str:
    """The path of one job, its id escaped so that no id can reach another route."""
    return JOB_PATH.format(job_id=quote(job_id, safe=""))


def job_cancel_path(job_id: str) -> str:
    """The cancel path of one job, its id escaped like :func:`job_path`."""
    return JOB_CANCEL_PATH.format(job_id=quote(job_id, safe=""))


# The OpenAI-compatible surface (USER and ADMIN keys): ``OpenAI(base_url=HOST + OPENAI_PREFIX)``.
#: Where the official OpenAI SDK's ``base_url`` points.
OPENAI_PREFIX = "/openai/v1"
#: Synchronous chat completion (waits for the job; ``stream: true`` as SSE).
OPENAI_CHAT_COMPLETIONS_PATH = OPENAI_PREFIX + "/chat/completions"
#: The live model list, OpenAI ``list`` shape.
OPENAI_MODELS_PATH = OPENAI_PREFIX + "/models"
#: Upload (multipart) and list files.
OPENAI_FILES_PATH = OPENAI_PREFIX + "/files"
#: One file (route pattern).
OPENAI_FILE_PATH = OPENAI_PREFIX + "/files/{file_id}"
#: One file's bytes (route pattern).
OPENAI_FILE_CONTENT_PATH = OPENAI_PREFIX + "/files/{file_id}/content"
#: Create and list batches.
OPENAI_BATCHES_PATH = OPENAI_PREFIX + "/batches"
#: One batch (route pattern).
OPENAI_BATCH_PATH = OPENAI_PREFIX + "/batches/{batch_id}"
#: Cancel one batch (route pattern).
OPENAI_BATCH_CANCEL_PATH = OPENAI_PREFIX + "/batches/{batch_id}/cancel"
