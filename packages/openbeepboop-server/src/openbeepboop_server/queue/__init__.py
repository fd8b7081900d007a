"""The queue's logic, knowing nothing of HTTP: :class:`.service.QueueService` and its parts.

Every change of a job's status is in :mod:`.transitions` (its docstring draws
the state machine); reads are in :mod:`.views`.
"""
