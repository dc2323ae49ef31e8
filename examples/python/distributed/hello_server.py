#!/usr/bin/env python3
"""DISTRIBUTED SERVER: run a workflow's steps as a worker server.

In the style of the original SDK's `06_distributed_server.py`, and run
unchanged against `cerebelum serve`. It:

1. builds this file into a package and uploads it to the server (every
   workflow in it can then be started by name),
2. submits an initial execution of `hello_workflow`,
3. runs as a worker server, showing logs, processing the steps of every
   execution of this package,
4. until Ctrl+C.

Usage:
    Terminal 1: cerebelum serve                       # the server (127.0.0.1:7433)
    Terminal 2: export CEREBELUM_SERVER=http://127.0.0.1:7433 CEREBELUM_API_KEY=...
                python3 hello_server.py               # this worker server
    Terminal 3: python3 hello_execute.py hello_workflow Alice
"""

import asyncio
from typing import Any

from cerebelum import Context, WorkflowBuilder, step, workflow


@step
async def greet(context: Context, inputs: dict[str, Any]) -> dict[str, str]:
    """Greet the user."""
    name = inputs.get("name", "World")
    print(f"  👋 [{context.step_name}] Hello, {name}!", flush=True)
    return {"message": f"Hello, {name}!"}


@step
async def make_uppercase(context: Context, greet: dict[str, str]) -> dict[str, str]:
    """Convert to uppercase."""
    upper = greet["message"].upper()
    print(f"  🔠 [{context.step_name}] {upper}", flush=True)
    return {"result": upper}


@workflow
def hello_workflow(wf: WorkflowBuilder) -> None:
    """Simple workflow for demonstration."""
    wf.timeline(greet >> make_uppercase)


async def main() -> None:
    """Run the workflow as a distributed server."""
    print("STARTING DISTRIBUTED WORKER SERVER (Ctrl+C to stop)", flush=True)
    # This call NEVER RETURNS: it runs as a worker server until Ctrl+C.
    await hello_workflow.execute(inputs={"name": "Initial"}, distributed=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        print("Server stopped")
