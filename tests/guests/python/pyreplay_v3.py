"""Version 3 of pyreplay_v1.py (tests/replay.rs): a step inserted before
the last. An execution of version 1 that got past `nap` called `last`
there, and diverges; one still in `nap` does not."""

from cerebelum import Context, sleep, step, workflow


@step
async def first(context: Context, inputs: dict) -> dict:
    return {"n": 1}


@step
async def nap(context: Context, inputs: dict) -> dict:
    await sleep(inputs["sleep_ms"])
    return {"slept": inputs["sleep_ms"]}


@step
async def audit(context: Context, inputs: dict) -> dict:
    return {"audited": True}


@step
async def last(context: Context, inputs: dict) -> dict:
    if inputs.get("last_ms"):
        await sleep(inputs["last_ms"])
    return {"n": 3}


@workflow
def pyreplay(wf):
    wf.timeline(first >> nap >> audit >> last)
