"""Version 3 of pypatch_v1.py (tests/replay.rs): the sleep inserted
without `patched()`. A step recorded past that point by version 1 fails
with nondeterminism when it goes on on this code."""

from cerebelum import Context, sleep, step, workflow


@step
async def work(context: Context, inputs: dict) -> dict:
    await sleep(inputs["a_ms"])
    await sleep(10)
    await sleep(inputs["b_ms"])
    return {"path": "new"}


@workflow
def pypatch(wf):
    wf.timeline(work)
