"""The event loop used inside the engine, driven by a recording sleep."""

import asyncio
import random

import pytest

from cerebelum._loop import DeadlockError, DurableLoop


def run(coro):
    slept = []
    loop = DurableLoop(slept.append)
    try:
        return loop.run_until_complete(coro), slept
    finally:
        loop.close()


def test_timers_advance_virtual_time_through_sleep():
    async def main():
        loop = asyncio.get_running_loop()
        await asyncio.sleep(1.5)
        await asyncio.sleep(0)
        return loop.time()

    result, slept = run(main())
    assert result == 1.5 and slept == [1500]


def test_concurrent_tasks_share_the_waits():
    async def nap(seconds, tag, log):
        await asyncio.sleep(seconds)
        log.append(tag)
        return tag

    async def main():
        log = []
        results = await asyncio.gather(nap(2, "b", log), nap(1, "a", log), nap(2, "c", log))
        return results, log

    (results, log), slept = run(main())
    assert results == ["b", "a", "c"] and log == ["a", "b", "c"]
    assert slept == [1000, 1000]


def test_same_program_same_sleeps():
    async def main(seed):
        rng = random.Random(seed)

        async def worker(i):
            for _ in range(3):
                await asyncio.sleep(rng.randint(1, 50) / 1000)
            return i

        return await asyncio.gather(*(worker(i) for i in range(5)))

    first, slept1 = run(main(7))
    second, slept2 = run(main(7))
    assert first == second == [0, 1, 2, 3, 4]
    assert slept1 == slept2 and sum(slept1) > 0


def test_wait_for_timeouts_and_cancellation():
    async def main():
        try:
            await asyncio.wait_for(asyncio.sleep(10), 0.25)
        except asyncio.TimeoutError:
            return "timed out"

    result, slept = run(main())
    assert result == "timed out" and slept == [250]


def test_exceptions_reach_the_caller():
    async def main():
        await asyncio.sleep(0.01)
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        run(main())


def test_a_future_nobody_resolves_is_a_deadlock_not_a_hang():
    async def main():
        await asyncio.get_running_loop().create_future()

    with pytest.raises(DeadlockError, match="not on a timer"):
        run(main())


def test_a_coroutine_runs_as_a_task_whether_or_not_it_waits():
    # asyncio.timeout and TaskGroup need the current task: a step that
    # never waits must have one too.
    async def quick():
        async with asyncio.timeout(5):
            async with asyncio.TaskGroup() as group:
                pass
        return asyncio.current_task() is not None, group is not None

    async def waits():
        async with asyncio.timeout(5):
            await asyncio.sleep(0.25)
        return asyncio.current_task() is not None

    assert run(quick()) == ((True, True), [])
    assert run(waits()) == (True, [250])


def test_a_loop_runs_again_after_clear():
    loop = DurableLoop(lambda ms: None)

    async def nap():
        await asyncio.sleep(1)
        return loop.time()

    assert loop.run_until_complete(nap()) == 1.0
    loop.clear()
    assert loop.run_until_complete(nap()) == 1.0
