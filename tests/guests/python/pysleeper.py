"""A worker step that sleeps between two side effects (tests/python_workers.rs).

On an external worker the sleep and the `retry`-wrapped marks are durable:
the server records them as the step's history, a long sleep hands the task
back, and a worker killed before, during or after the sleep repeats
neither mark when the step runs again."""

import os
import random
import sys
import time

from cerebelum import Context, retry, sleep, step, workflow


def mark(path: str, what: str) -> str:
    with open(path, "a") as f:
        f.write(what + "\n")
    return what


@step(retry=2)
async def nap(context: Context, inputs: dict) -> dict:
    flip = inputs.get("flip")
    if flip and os.path.exists(flip):
        await sleep(1)  # a first call other than the one its history recorded
    before = await retry(mark, inputs["marks"], "before")
    # Journaled as the step's output; a run again prints only what is new.
    print(f"nap made {before}", file=sys.stderr)
    await sleep(inputs["sleep_ms"])
    after = await retry(mark, inputs["marks"], "after")
    print(f"nap made {after}", file=sys.stderr)
    return {"before": before, "after": after, "attempt": context.attempt}


@workflow
def pysleeper(wf):
    wf.timeline(nap)


@step(retry=2)
async def stamp(context: Context, inputs: dict) -> dict:
    # Journaled: run again after the sleep, the step reads the same values.
    t = time.time()
    r = random.random()
    mark(inputs["marks"], f"read {t!r} {r!r}")  # not journaled: made by each run
    await sleep(inputs["sleep_ms"])
    return {"t": t, "r": r, "after": time.time()}


@workflow
def pystamp(wf):
    wf.timeline(stamp)
