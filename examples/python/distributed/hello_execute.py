#!/usr/bin/env python3
"""EXECUTE WORKFLOW: send an execution request to the server.

In the style of the original SDK's `06_execute_workflow.py`, and run
unchanged against `cerebelum serve`: it starts, by name, a workflow that a
running worker server (`hello_server.py`) registered, and returns at once
with the execution's id; the worker server runs its steps.

Usage:
    python3 hello_execute.py <workflow> [name]     # e.g. hello_workflow Alice

The API key comes from CEREBELUM_API_KEY.
"""

import asyncio
import sys

from cerebelum.distributed import DistributedExecutor


async def execute_workflow(workflow_name: str, name: str = "World") -> None:
    executor = DistributedExecutor(core_url="localhost:7433", worker_id="python-executor")
    try:
        # By name: the workflow is registered by the worker server.
        result = await executor.execute(workflow=workflow_name, input_data={"name": name})
        print("✅ Workflow submitted successfully!")
        print(f"   Execution ID: {result.execution_id}")
        print(f"   Status: {result.status}")
    finally:
        executor.close()


async def main() -> None:
    if len(sys.argv) < 2:
        print("Usage: python3 hello_execute.py <workflow_name> [name]")
        sys.exit(1)
    await execute_workflow(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "World")


if __name__ == "__main__":
    asyncio.run(main())
