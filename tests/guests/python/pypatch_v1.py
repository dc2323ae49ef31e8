"""Version 1 of the package tests/replay.rs patches: one step that sleeps
twice (`a_ms`, then `b_ms`). pypatch_v2.py inserts a third sleep between
them behind `patched()`; pypatch_v3.py inserts it without."""

from cerebelum import Context, sleep, step, workflow


@step
async def work(context: Context, inputs: dict) -> dict:
    await sleep(inputs["a_ms"])
    await sleep(inputs["b_ms"])
    return {"path": "old"}


@workflow
def pypatch(wf):
    wf.timeline(work)
