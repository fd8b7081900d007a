"""Size limits that are part of the wire contract.

They live here, not in the server, so that clients and nodes can split their
work to fit before sending it, and so the models can enforce them.
"""

from __future__ import annotations

#: Most job ids one poll may name.
MAX_POLL_IDS = 1_000
#: Most requests in one bulk submit (one transaction on the server).
MAX_BULK_SUBMIT = 5_000
#: Most leases one fetch may ask for.
MAX_FETCH_JOBS = 256
#: Most results, errors or releases one queue submit may carry.
MAX_SUBMIT_OUTCOMES = 1_000
#: Most leases one heartbeat may extend.
MAX_HEARTBEAT_LEASES = 1_000
#: Longest long-poll (fetch and poll ``wait``), in seconds. HTTP clients must
#: use a read timeout above this.
MAX_WAIT_SECONDS = 30.0
#: Most models one node may declare in a fetch or heartbeat.
MAX_NODE_MODELS = 256
#: Longest error message a node may report; longer ones are truncated by the node.
MAX_ERROR_MESSAGE_CHARS = 8_000
#: Prefix of every job id.
JOB_ID_PREFIX = "job-"
