"""``Lifecycle`` and ``AppHealth``: readiness from start, the app's own health, and draining."""

from __future__ import annotations

import pytest

from blazerpc import BlazeError, Status
from blazerpc.lifecycle import AppHealth, Lifecycle


async def test_readiness_needs_start_health_and_no_draining() -> None:
    health = AppHealth()
    lifecycle = Lifecycle(health)
    seen: list[bool] = []
    lifecycle.on_change(seen.append)
    assert not lifecycle.serving and lifecycle.unready_reason == "server is starting"
    lifecycle.set_ready()
    health.set_available(False, "the engine is restarting")
    assert not lifecycle.serving and lifecycle.unready_reason == "the engine is restarting"
    health.set_available(True)
    lifecycle.start_draining()
    assert lifecycle.unready_reason == "server is shutting down"
    assert seen == [False, True, False, True, False]


async def test_a_fatal_app_failure_is_kept_and_reported() -> None:
    health = AppHealth()
    calls: list[str | None] = []
    health.on_change(lambda: calls.append(health.fatal))
    health.fail("the engine died 3 times")
    assert calls == ["the engine died 3 times"] and not health.available


async def test_tracking_counts_calls_and_refuses_them_while_draining() -> None:
    lifecycle = Lifecycle()
    with lifecycle.track():
        assert lifecycle.active == 1 and not await lifecycle.wait_idle(0.01)
    assert lifecycle.active == 0 and await lifecycle.wait_idle(0)
    lifecycle.start_draining()
    with pytest.raises(BlazeError) as caught, lifecycle.track():
        pass
    assert caught.value.status is Status.UNAVAILABLE and lifecycle.active == 0


async def test_skip_grace_ends_a_wait_at_once() -> None:
    lifecycle = Lifecycle()
    with lifecycle.track():
        lifecycle.skip_grace()
        assert await lifecycle.wait_idle(5)
