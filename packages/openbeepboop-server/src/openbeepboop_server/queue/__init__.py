"""The queue's logic, knowing nothing of HTTP: :class:`.service.QueueService` and its parts."""
