"""The package `python -m cerebelum replay` debugs (tests/replay.rs): a
step that reads the clock and prints it, one that sleeps, one that waits
for an approval, and one whose result depends on all three.
pydebug_v2.py sleeps twice in `nap`."""

import time

from cerebelum import Context, sleep, step, wait_for_approval, workflow


@step
async def stamp(context: Context, inputs: dict) -> dict:
    now = time.time()
    print(f"stamp read the clock: {now}")
    return {"now": now}


@step
async def nap(context: Context, inputs: dict) -> dict:
    await sleep(inputs["sleep_ms"])
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
