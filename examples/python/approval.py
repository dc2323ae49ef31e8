"""An approval flow with a timeout: a change is prepared, a human approves
or rejects it (or nobody answers in time), and it is applied or dropped.

In the engine:  cerebelum start approval.wasm change --input '{"change": "resize db"}'
                cerebelum approve EXECUTION_ID change-review --data '{"by": "ana"}'
"""

import asyncio
import json
from typing import Any

from cerebelum import (ApprovalRejectedError, ApprovalTimeoutError, Context, WorkflowBuilder,
                       step, wait_for_approval, workflow)

Data = dict[str, Any]  # a JSON object


@step
async def prepare(context: Context, inputs: Data) -> Data:
    return {"change": inputs["change"], "risk": "high" if "db" in inputs["change"] else "low"}


@step
async def review(context: Context, prepare: Data, inputs: Data) -> Data:
    """Waits for a person; no answer within timeout_ms counts as a no."""
    try:
        decision = await wait_for_approval("change-review", data=prepare,
                                           timeout_ms=inputs.get("timeout_ms", 3_600_000))
    except ApprovalRejectedError as e:
        return {"approved": False, "reason": e.reason}
    except ApprovalTimeoutError:
        return {"approved": False, "reason": "nobody answered in time"}
    return {"approved": True, "by": decision.get("by", "someone")}


@step
async def apply_change(context: Context, prepare: Data, review: Data) -> str:
    if not review["approved"]:
        return f"dropped {prepare['change']!r}: {review['reason']}"
    return f"applied {prepare['change']!r}, approved by {review['by']}"


@workflow
def change(wf: WorkflowBuilder) -> None:
    """Prepare, review, apply."""
    wf.timeline(prepare >> review >> apply_change)


if __name__ == "__main__":
    result = asyncio.run(change.execute(
        {"change": "resize db"}, approval_handler=lambda kind, data: {"by": "ana"}))
    print(json.dumps({"status": result.status, "output": result.output, "steps": result.steps}, indent=2))
