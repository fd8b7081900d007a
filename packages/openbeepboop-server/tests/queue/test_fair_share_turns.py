"""The ordering rule alone (queue/fair_share.py), without a database."""

from __future__ import annotations

import random

from openbeepboop_server.queue.fair_share import Head, Turns

from tests.support.turns import take_turns

NOW = 1_700_000_000.0
AGING = 600.0


def test_keeping_only_the_first_owners_changes_no_pick() -> None:
    """``picks``: ordering only as many owners as jobs will be taken is exact."""
    rng = random.Random(7)
    for _ in range(200):
        heads: list[Head] = []
        ranks: dict[tuple[str, int], list[float]] = {}
        for owner in range(rng.randint(1, 40)):
            model = rng.choice("ab")
            own = sorted(NOW - rng.uniform(-1200, 3600) for _ in range(rng.randint(1, 5)))
            priority = rng.choice([0, 0, 0, 1, -1, 3])
            stored = rng.choice([None, rng.uniform(0, 5)])
            heads.append(Head(model, owner, own[0], priority, rng.choice([1, 1, 2, 3]), stored))
            ranks[(model, owner)] = own
        count = rng.randint(1, 30)
        whole = take_turns(
            Turns(heads, now=NOW, aging_seconds=AGING),
            {k: list(v) for k, v in ranks.items()},
            count,
        )
        few = take_turns(
            Turns(heads, now=NOW, aging_seconds=AGING, picks=count),
            {k: list(v) for k, v in ranks.items()},
            count,
        )
        assert few == whole


def test_a_newcomer_is_lifted_to_one_claim_behind_the_most_served() -> None:
    heads = [Head("m", 1, NOW - 10, 0, 1, 50.0), Head("m", 2, NOW - 1, 0, 1, None)]
    turns = Turns(heads, now=NOW, aging_seconds=AGING)
    assert turns.next() == ("m", 2)  # 49 < 50
    turns.served("m", 2, NOW - 1)
    assert turns.next() == ("m", 1)  # 50 = 50: the older head first
    assert [(model, owner, floor) for model, owner, floor, _ in turns.advances()] == [
        ("m", 2, 49.0)
    ]
