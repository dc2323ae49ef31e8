"""Version 4 of pypatch_v1.py (tests/replay.rs): version 2's patch
retired with `deprecate_patch()`, the new path the only one. A step
recorded by version 2 on the new path (its history has the patch) still
replays; one recorded by version 1 past that point no longer does."""

from cerebelum import Context, deprecate_patch, sleep, step, workflow


@step
async def work(context: Context, inputs: dict) -> dict:
    await sleep(inputs["a_ms"])
    await deprecate_patch("extra-nap")
    await sleep(10)
    await sleep(inputs["b_ms"])
    return {"path": "new"}


@workflow
def pypatch(wf):
    wf.timeline(work)
