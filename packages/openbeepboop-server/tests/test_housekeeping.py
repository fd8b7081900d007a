"""The housekeeper's pacing: background reads never take more than their share of a core."""

from __future__ import annotations

import pytest
from openbeepboop_server.housekeeping import SERVED_REFRESH_SECONDS, next_served_refresh


def test_a_slow_read_of_the_served_models_waits_twenty_times_its_duration() -> None:
    # A registry of a thousand nodes declaring 256 names each took ~0.1 s to read:
    # read every second, that was a tenth of a core taken from every request.
    assert next_served_refresh(0.001) == SERVED_REFRESH_SECONDS
    assert next_served_refresh(0.2) == pytest.approx(4.0)
