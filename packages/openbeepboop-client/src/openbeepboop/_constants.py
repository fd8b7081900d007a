"""Named defaults of the client: every timeout, retry and file name in one place.

Each one can be overridden per client (``Client(timeout=..., max_retries=...)``)
or per call (``client.with_options(...)``, ``timeout=`` on a method).
"""

from __future__ import annotations

#: Seconds to wait for the server to answer one HTTP request (read, write, pool).
DEFAULT_TIMEOUT = 60.0
#: Seconds to wait for a TCP connection; short, so an unreachable server fails fast.
DEFAULT_CONNECT_TIMEOUT = 5.0
#: Retries after the first attempt, for connection errors, timeouts, 408/409/429/5xx.
DEFAULT_MAX_RETRIES = 2

#: First retry waits about this long; each further retry doubles it.
INITIAL_RETRY_DELAY = 0.5
#: No backoff step waits longer than this.
MAX_RETRY_DELAY = 8.0
#: Up to this fraction of each backoff step is taken off at random, so many
#: clients retrying after one outage do not arrive in lockstep.
RETRY_JITTER = 0.25
#: A ``Retry-After`` above this many seconds is ignored in favour of our own backoff.
MAX_RETRY_AFTER = 60.0

#: Extra read time granted to a long-poll above the ``wait`` it asks the server for.
LONG_POLL_GRACE = 15.0
#: A waiting loop starts a new round of polls at most this often, so a stream of
#: finishing jobs is collected in batches instead of one request per job.
MIN_WAIT_ROUND_SECONDS = 0.5
#: A wait that someone watches (a progress bar, the CLI's status line) long-polls
#: at most this long per round: the server's long-poll answers when a job
#: finishes, not when a node takes it, so without this a job already running
#: would still read "QUEUED" for up to 30 s. One small request per 2 s per watcher.
WATCHED_WAIT_ROUND_SECONDS = 2.0
#: A wait without a timeout of its own keeps asking a server that stopped
#: answering (refused, reset, 502/503/504, timeouts) for this long before it
#: gives up: a restart, an upgrade's migrations or a host reboot fit in it, and
#: a server gone for good still ends an overnight wait with an error.
WAIT_OUTAGE_SECONDS = 900.0

#: Environment variables that override the config file.
ENV_SERVER_URL = "OPENBEEPBOOP_SERVER_URL"
ENV_API_KEY = "OPENBEEPBOOP_API_KEY"
ENV_DEFAULT_MODEL = "OPENBEEPBOOP_DEFAULT_MODEL"

#: ``platformdirs.user_config_dir(APP_NAME)`` holds :data:`CONFIG_FILENAME`.
APP_NAME = "openbeepboop"
CONFIG_FILENAME = "client_config.toml"

#: The header that makes a submit safe to retry (the server dedupes on it).
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: The longest Idempotency-Key the server takes.
MAX_IDEMPOTENCY_KEY_LENGTH = 255
#: The longest key a bulk submit is given: each chunk sends it with ``-N`` added.
MAX_BULK_IDEMPOTENCY_KEY_LENGTH = 240
#: Response headers that may carry the server's id for a request, first match wins.
REQUEST_ID_HEADERS = ("x-request-id", "request-id")

#: A bulk submit is split so no request body exceeds about this many bytes,
#: comfortably under the server's default 10 MB body limit.
MAX_BULK_BODY_BYTES = 8_000_000
