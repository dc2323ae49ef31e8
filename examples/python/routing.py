"""Diverge and branch (simulated): an install that may time out or fail,
and a health check that decides between finishing and rolling back.

Inputs: {"install": "ok" | "timeout" | "broken", "healthy": true | false}
"""

import asyncio
import json
from typing import Any

from cerebelum import Context, WorkflowBuilder, step, workflow

Data = dict[str, Any]  # a JSON object


@step
async def provision(context: Context, inputs: Data) -> Data:
    return {"server": "srv-1"}


@step
async def install_app(context: Context, inputs: Data, provision: Data) -> Data:
    mode = inputs.get("install", "ok")
    if mode == "timeout":
        raise TimeoutError("install timeout: the package mirror did not answer")
    if mode == "broken":
        raise RuntimeError("install failed: dependency conflict")
    return {"installed_on": provision["server"]}


@step
async def install_from_cache(context: Context, provision: Data) -> Data:
    return {"installed_on": provision["server"], "from": "cache"}


@step
async def health_check(context: Context, inputs: Data) -> Data:
    return {"healthy": bool(inputs.get("healthy", True))}


@step
async def done(context: Context, provision: Data) -> str:
    return f"{provision['server']} is serving"


@step
async def rollback(context: Context, provision: Data) -> str:
    return f"{provision['server']} rolled back"


@workflow
def release(wf: WorkflowBuilder) -> None:
    """Install (with fallbacks), check health, finish or roll back."""
    wf.timeline(provision >> install_app >> health_check)
    wf.diverge(install_app, {"timeout": install_from_cache >> health_check,
                             "error": rollback})
    wf.branch(after=health_check, condition=lambda r: r["ok"]["healthy"],
              when_true=done, when_false=rollback)


if __name__ == "__main__":
    for inputs in ({"install": "ok"}, {"install": "timeout"}, {"install": "broken"},
                   {"install": "ok", "healthy": False}):
        result = asyncio.run(release.execute(inputs))
        print(json.dumps({"inputs": inputs, "status": result.status, "output": result.output, "steps": result.steps}))
