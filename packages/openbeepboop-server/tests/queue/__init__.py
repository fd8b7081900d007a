"""The queue's tests: services on a real database, with a hand-moved clock."""
