"""Driving the fair-share order (queue/fair_share.py) the way a claim does, without a database."""

from __future__ import annotations

from openbeepboop_server.queue.fair_share import Turns


def take_turns(
    turns: Turns, ranks: dict[tuple[str, int], list[float]], count: int
) -> list[tuple[str, int]]:
    """Take up to ``count`` jobs, each (model, owner)'s in rank order: whose turn each was."""
    taken: list[tuple[str, int]] = []
    while len(taken) < count and (turn := turns.next()) is not None:
        taken.append(turn)
        left = ranks[turn]
        left.pop(0)
        if left:
            turns.served(*turn, left[0])
        else:
            turns.exhausted(*turn, claimed_one=True)
    return taken
