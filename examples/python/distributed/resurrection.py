#!/usr/bin/env python3
"""RESURRECTION: a worker step's sleep outlives its worker.

In the style of the original SDK's resurrection test. `prepare` runs, then
`long_task` sleeps 10 s in the middle of its work. Kill this script
(`kill -9`) while it sleeps and start it again: the new run serves the
same queue, takes the task when the sleep ends and finishes the step —
`prepare` does not run again, and neither does the part of `long_task`
before the sleep (`retry` recorded it).

Usage:
    Terminal 1: cerebelum serve
    Terminal 2: export CEREBELUM_SERVER=http://127.0.0.1:7433 CEREBELUM_API_KEY=...
                python3 resurrection.py      # kill -9 it during the sleep, run it again
"""

import asyncio
from typing import Any

from cerebelum import Context, WorkflowBuilder, retry, sleep, step, workflow


def announce(what: str) -> str:
    print(what, flush=True)
    return what


@step
async def prepare(context: Context, inputs: dict[str, Any]) -> dict[str, str]:
    announce(f"[{context.execution_id}] preparing {inputs['name']}")
    return {"name": inputs["name"]}


@step
async def long_task(context: Context, prepare: dict[str, str]) -> dict[str, str]:
    await retry(announce, f"[{context.execution_id}] long task: sleeping 10 s")
    await sleep(10_000)
    announce(f"[{context.execution_id}] long task: awake")
    return {"done": prepare["name"]}


@workflow
def resurrection(wf: WorkflowBuilder) -> None:
    wf.timeline(prepare >> long_task)


async def main() -> None:
    # Never returns: a worker server of this file's queue until Ctrl+C.
    await resurrection.execute(inputs={"name": "phoenix"}, distributed=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        print("Server stopped")
