"""Shared helpers for end-to-end tests over loopback sockets.

Every venue's tests run each scenario under plain asyncio and under uvloop (the ``run``
fixture in conftest.py), bounded in time, and end by proving nothing was left behind:
the engine closed, the simulator stopped with every client closed and no hook error,
and no asyncio task still alive.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable, Coroutine

import uvloop

LOOPS = ("asyncio", "uvloop")


def run_on(loop: str, coro: Coroutine[Any, Any, Any], timeout_s: float = 30.0) -> Any:
    """Run ``coro`` to completion on a fresh event loop of the named kind, bounded by
    ``timeout_s`` (the bound runs in the same task, so task-leak checks stay exact)."""
    async def bounded() -> Any:
        async with asyncio.timeout(timeout_s):
            return await coro

    factory = uvloop.new_event_loop if loop == "uvloop" else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(bounded())


def tasks_left(ignore: Callable[[asyncio.Task[Any]], bool] = lambda t: False) -> set[asyncio.Task[Any]]:
    """Tasks still alive besides the current one (minus those ``ignore`` accepts)."""
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not ignore(t)}


def assert_no_tasks_left() -> None:
    left = tasks_left()
    assert not left, left


async def close_engine_and_sim(eng: Any, sim: Any) -> None:
    """Close the engine, stop the simulator, and check that every client connection
    closed, no simulator hook raised, and no task is left."""
    await eng.close()
    await sim.stop()
    assert sim.stats["hook_errors"] == 0
    assert all(c.closed for c in sim.clients) or not sim.clients
    assert_no_tasks_left()


async def step(sim: Any, n: int, chunk: int = 10) -> None:
    """Advance a manually stepped simulator by ``n`` publications, ``chunk`` at a time,
    yielding to the loop between chunks so the client keeps up."""
    for _ in range(0, n, chunk):
        sim.advance(chunk)
        await asyncio.sleep(0)


async def oversize_frame_reconnects(h: Any, step: Callable[[Any, int], Coroutine[Any, Any, None]],
                                    publications: int, oversize_bytes: int, same_state: bool = True) -> None:
    """Shared fault scenario: the simulator sends one frame over the feed's maximum
    message size; the feed drops that connection ("oversize" in the reason), reconnects
    once, resyncs, and (``same_state``) ends with exactly the simulator's state.

    ``h`` is a venue test's harness: ``feed``, ``sim``, ``statuses``, ``caught_up()``
    and ``assert_same_state()``; ``step(h, n)`` advances its simulator."""
    from feeds.session import FeedStatus

    await h.feed.wait_subscribed(5)
    await step(h, publications)
    await h.caught_up()
    h.sim.send_oversize(oversize_bytes)
    await step(h, publications)
    await h.caught_up()
    if same_state:
        h.assert_same_state()
    assert h.feed.counters.reconnects == 1
    reasons = [e.reason for e in h.statuses if e.status is FeedStatus.RECONNECTING]
    assert any("oversize" in r for r in reasons), reasons


async def close_code_scenario(h: Any, step: Callable[[Any, int], Coroutine[Any, Any, None]], code: int,
                              terminal: bool, publications: int = 30) -> None:
    """Shared fault scenario: the simulator closes the connection with ``code``. A
    terminal code stops the feed ("failed", the code in the reason, no reconnect, no
    connection left); any other reconnects once and ends with the simulator's state."""
    from feeds.session import FeedStatus

    await h.feed.wait_subscribed(5)
    await step(h, publications)
    await h.caught_up()
    h.sim.close(code, "test close")
    if terminal:
        await h.status(FeedStatus.FAILED)
        assert str(code) in h.feed.status_reason
        await asyncio.sleep(0.1)
        assert h.feed.counters.reconnects == 0 and len(h.sim.clients) == 0
    else:
        await step(h, publications)
        await h.caught_up()
        assert h.feed.counters.reconnects == 1
        h.assert_same_state()
