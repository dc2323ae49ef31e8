"""pydebug.py with `nap` changed: it sleeps twice, half as long each
time, so `python -m cerebelum replay` of an execution recorded by
pydebug.py diverges at nap's first sleep (tests/replay.rs)."""

import time

from cerebelum import Context, sleep, step, wait_for_approval, workflow


@step
async def stamp(context: Context, inputs: dict) -> dict:
    now = time.time()
    print(f"stamp read the clock: {now}")
    return {"now": now}


@step
async def nap(context: Context, inputs: dict) -> dict:
    await sleep(inputs["sleep_ms"] // 2)
    await sleep(inputs["sleep_ms"] // 2)
    return {"slept": inputs["sleep_ms"]}


@step
async def ask(context: Context, inputs: dict) -> dict:
    decision = await wait_for_approval("go", {"why": "to finish"})
    return {"decision": decision}


@step
async def finish(context: Context, stamp: dict, ask: dict) -> dict:
    total = stamp["now"] + len(ask["decision"])
    return {"total": total}


@workflow
def pydebug(wf):
    wf.timeline(stamp >> nap >> ask >> finish)
