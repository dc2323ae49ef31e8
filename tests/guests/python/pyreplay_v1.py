"""Version 1 of the package `cerebelum replay` and `upload --check` check
other code against (tests/replay.rs): three steps in a row, the middle
one sleeping for as long as its input says (`sleep_ms`), the last too if
it says (`last_ms`). pyreplay_v2.py changes a step's body only;
pyreplay_v3.py inserts a step before the last."""

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
    return {"n": 3}


@workflow
def pyreplay(wf):
    wf.timeline(first >> nap >> last)
