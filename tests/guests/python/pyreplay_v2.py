"""Version 2 of pyreplay_v1.py (tests/replay.rs): only the last step's body
changed. Every execution of version 1 replays against it."""

from cerebelum import Context, sleep, step, workflow


@step
async def first(context: Context, inputs: dict) -> dict:
    return {"n": 1}


@step
async def nap(context: Context, inputs: dict) -> dict:
    await sleep(inputs["sleep_ms"])
    return {"slept": inputs["sleep_ms"]}


@step
async def last(context: Context, inputs: dict) -> dict:
    if inputs.get("last_ms"):
        await sleep(inputs["last_ms"])
    return {"n": 3, "fixed": True}


@workflow
def pyreplay(wf):
    wf.timeline(first >> nap >> last)
