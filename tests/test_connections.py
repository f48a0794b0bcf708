"""The connection budget: admission, displacing the longest-idle connection, idle timeouts."""

from __future__ import annotations

import asyncio
import resource

from blazerpc.connections import RESERVED_FDS, ConnectionBudget, default_max_connections


class Socketish:
    """A connection as the budget sees one: busy or not, and closable."""

    def __init__(self, name: str, idle_timeout_s: float = 60.0) -> None:
        self.name, self.idle_timeout_s = name, idle_timeout_s
        self.in_flight = False
        self.closed = False

    def busy(self) -> bool:
        return self.in_flight

    def close(self) -> None:
        self.closed = True


async def test_over_budget_the_longest_idle_connection_makes_room() -> None:
    budget = ConnectionBudget(limit=3)
    a, b, c, d = (Socketish(n) for n in "abcd")
    for connection in (a, b, c):
        assert budget.admit(connection)
        await asyncio.sleep(0.01)
    a.in_flight = True  # a is the oldest, but busy: b goes
    assert budget.admit(d) and b.closed and not a.closed and len(budget) == 3
    budget.close()


async def test_when_every_connection_is_busy_a_new_one_is_refused() -> None:
    budget = ConnectionBudget(limit=2)
    a, b = Socketish("a"), Socketish("b")
    assert budget.admit(a) and budget.admit(b)
    a.in_flight = b.in_flight = True
    assert not budget.admit(Socketish("c"))
    b.in_flight = False
    assert budget.admit(Socketish("d")) and b.closed
    budget.close()


async def test_idle_connections_are_closed_after_their_timeout_and_busy_ones_never() -> None:
    budget = ConnectionBudget(limit=10)
    quick, slow, working = Socketish("quick", 0.2), Socketish("slow", 60), Socketish("working", 0.2)
    working.in_flight = True
    for connection in (quick, slow, working):
        budget.admit(connection)
    await asyncio.sleep(1.2)
    assert quick.closed and not slow.closed and not working.closed
    working.in_flight = False  # idle from the next sweep on
    await asyncio.sleep(1.2)
    assert working.closed and len(budget) == 1
    budget.release(slow)
    await asyncio.sleep(0.6)  # nothing left: the sweeper stops
    assert budget._sweeper is not None and budget._sweeper.done()


def test_the_default_budget_leaves_file_descriptors_for_everything_else() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert default_max_connections() == max(16, soft - RESERVED_FDS)
