"""A workflow for the external-worker tests (tests/python_workers.rs): three
steps in a row, run by the engine's sandbox or by `python -m cerebelum
worker` with the same result."""

import asyncio

from cerebelum import Context, ProgressReporter, step, workflow


@step
async def greet(context: Context, inputs: dict) -> dict:
    if inputs.get("fail"):
        raise ValueError(inputs["fail"])
    return {"greeting": f"hello {inputs['name']}", "workflow": context.workflow_name}


@step(retry=3)
async def work(context: Context, inputs: dict, greet: dict) -> dict:
    """Sleeps `sleep_ms` when told (a worker may be killed meanwhile)."""
    ProgressReporter(context).update(50, "working")
    if inputs.get("sleep_ms"):
        await asyncio.sleep(inputs["sleep_ms"] / 1000)
    return {"words": greet["greeting"].split(), "n": inputs.get("n", 1) * 2,
            "attempt": context.attempt}


@step
async def finish(context: Context, greet: dict, work: dict) -> dict:
    return {"summary": f"{greet['greeting']} x{work['n']}", "count": len(work["words"]),
            "step": context.step_name}


@workflow
def pyworker(wf):
    wf.timeline(greet >> work >> finish)
