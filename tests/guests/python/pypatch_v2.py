"""Version 2 of pypatch_v1.py (tests/replay.rs): a sleep inserted between
the two, behind `patched()`. A step recorded past that point by version 1
keeps the old path; one that reaches it on this code takes the new."""

from cerebelum import Context, patched, sleep, step, workflow


@step
async def work(context: Context, inputs: dict) -> dict:
    await sleep(inputs["a_ms"])
    path = "old"
    if await patched("extra-nap"):
        await sleep(10)
        path = "new"
    await sleep(inputs["b_ms"])
    return {"path": path}


@workflow
def pypatch(wf):
    wf.timeline(work)
