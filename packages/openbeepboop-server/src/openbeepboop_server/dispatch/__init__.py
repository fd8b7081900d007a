"""Dispatch: who is woken, which parked node gets a job, waiting for leases and results.

The layer between the HTTP handlers (``http/``: parse, authenticate, answer)
and the queue's rules (``queue/``); it imports downward only and knows nothing
of HTTP: a long-poll's client hanging up reaches it as a callback on its
waiter, never as a request.

Modules: ``wakeups`` (the registry of waiting long-polls and the
notifications that wake them), ``handoff`` (a submit claiming for a parked
fetch; leases given back), ``waiting`` (the fetch and poll long-polls),
``delivery`` (what a node's outcomes wake and hand to waiting polls),
``calls`` (whether a service call runs on the loop or in a thread),
``status_cache`` (the pool status, built at most once a moment),
``statuses`` (the schemas' statuses as strings) and ``context`` (what dispatch
needs of the running app).
"""
