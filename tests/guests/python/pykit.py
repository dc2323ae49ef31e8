"""Python guests for the engine's end-to-end tests: each workflow exercises
one feature of the Python SDK inside the engine."""

import asyncio
import random
import time
from datetime import datetime, timezone

from cerebelum import (Context, ProgressReporter, SignalTimeoutError, http, poll, set_state, sleep,
                       step, wait_for_signal, workflow)


@step
async def nap(context: Context, inputs: dict) -> dict:
    """Reports, sleeps durably, reports: a crash during the sleep must
    resume on the line after it."""
    ProgressReporter(context).update(10, "before the sleep")
    await sleep(inputs["sleep_ms"], data={"for": "the crash test"})
    ProgressReporter(context).update(90, "after the sleep")
    return {"slept_ms": inputs["sleep_ms"]}


@workflow
def napper(wf):
    wf.timeline(nap)


@step
async def await_dns(context: Context, inputs: dict) -> dict:
    """Waits for signal `dns` (durably), publishing where it stands."""
    set_state({"phase": "waiting for dns"})
    try:
        got = await wait_for_signal("dns", timeout_ms=inputs.get("timeout_ms"))
    except SignalTimeoutError as e:
        return {"timed_out": str(e)}
    set_state({"phase": "dns ok"})
    return {"dns": got}


@workflow
def dns_wf(wf):
    wf.timeline(await_dns)


@step
async def count_up(context: Context, inputs: dict):
    """Continues as new with n + 1 until n reaches `until`."""
    n = inputs.get("n", 0)
    if n < inputs["until"]:
        return context.continue_as_new({"n": n + 1, "until": inputs["until"]})
    return {"reached": n}


@workflow
def counter(wf):
    wf.timeline(count_up)


@step
async def deploy_one(context: Context, inputs: dict) -> str:
    return f"deployed {inputs['server']}"


@workflow
def deploy_server(wf):
    """A workflow run as a child of `rollout` and `fleet`."""
    wf.timeline(deploy_one)


@step
async def prepare(context: Context, inputs: dict) -> str:
    return "prepared"


@step
async def announce(context: Context, deploy_server: dict) -> str:
    return deploy_server["output"]


@workflow
def rollout(wf):
    """A workflow used as a step of a timeline: run as a child."""
    wf.timeline(prepare >> deploy_server >> announce)


@step
async def fan_children(context: Context, inputs: dict) -> list:
    """Explicit children from a step."""
    done = []
    for server in inputs["servers"]:
        child = await context.child(deploy_server, {"server": server})
        done.append(child["output"])
    return done


@workflow
def fleet(wf):
    wf.timeline(fan_children)


@step
async def ready(context: Context, inputs: dict):
    """A poll's check: ready on its third check."""
    return {"ready_on_check": context.attempt} if context.attempt >= 3 else None


@step
async def wait_ready(context: Context, inputs: dict) -> dict:
    return await poll(ready, interval=100, max_attempts=10)


@workflow
def poller(wf):
    wf.timeline(wait_ready)


@step(retry=3)
async def flaky(context: Context, inputs: dict) -> int:
    if context.attempt < 3:
        raise ConnectionError(f"attempt {context.attempt} failed")
    return context.attempt


@workflow
def retrier(wf):
    wf.timeline(flaky)


@step
async def ambient(context: Context, inputs: dict) -> dict:
    """Randomness, clocks and asyncio inside a step."""
    first = random.random()
    t0 = time.time()
    # The step runs as a task from its first line: timeout and TaskGroup work.
    in_task = asyncio.current_task() is not None
    async with asyncio.timeout(5):
        async with asyncio.TaskGroup() as group:
            grouped = group.create_task(asyncio.sleep(0.01, "g"))
    await asyncio.sleep(0.2)
    results = await asyncio.gather(asyncio.sleep(0.1, "a"), asyncio.sleep(0.05, "b"))
    return {"random": [first, random.random()], "time_ok": time.time() >= t0,
            "gathered": results, "in_task": in_task, "grouped": grouped.result()}


@workflow
def ambient_wf(wf):
    wf.timeline(ambient)


@step
async def clock(context: Context, inputs: dict) -> dict:
    """The real time of each read, around a durable sleep."""
    t0, d0 = time.time(), datetime.now(timezone.utc)
    await sleep(inputs["sleep_ms"])
    t1, d1 = time.time(), datetime.now(timezone.utc)
    return {"t0_ms": round(t0 * 1000), "slept_s": t1 - t0,
            "datetime_s": (d1 - d0).total_seconds(), "utcnow": datetime.utcnow().isoformat()}


@workflow
def clock_wf(wf):
    wf.timeline(clock)


@step
async def talk(context: Context, inputs: dict) -> dict:
    """Prints around a durable sleep: `run` and `watch` show it as it goes."""
    print(f"before the sleep of {inputs['sleep_ms']} ms")
    await sleep(inputs["sleep_ms"])
    print("after the sleep")
    return {"talked": True}


@workflow
def talk_wf(wf):
    wf.timeline(talk)


@step
async def fetch(context: Context, inputs: dict) -> dict:
    """An allow-listed request with a secret, then a durable sleep: a
    crash during the sleep must not send the request again."""
    token = context.secret("api-token")
    r = http.get(inputs["url"], headers={"authorization": f"Bearer {token}"})
    await sleep(inputs.get("sleep_ms", 0))
    return {"status": r.status, "echo": r.json(), "server": r.headers.get("x-served-by")}


@workflow
def fetcher(wf):
    wf.timeline(fetch)
