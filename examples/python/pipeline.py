"""A fan-out/fan-in data pipeline (simulated): fetch three sources in
parallel, clean each, then merge and publish. Parallel groups run
concurrently, locally and in the engine."""

import asyncio
import json
from typing import Any

from cerebelum import Context, WorkflowBuilder, sleep, step, workflow

Data = dict[str, Any]  # a JSON object

ROWS = {
    "orders": [3, 1, None, 4],
    "refunds": [1, None, 5],
    "payouts": [9, 2, 6, None],
}


async def fetch(source: str, delay_ms: int) -> list[Any]:
    await sleep(delay_ms)  # a slow API
    return ROWS[source]


@step
async def fetch_orders(context: Context, inputs: Data) -> list[Any]:
    return await fetch("orders", inputs.get("delay_ms", 200))


@step
async def fetch_refunds(context: Context, inputs: Data) -> list[Any]:
    return await fetch("refunds", inputs.get("delay_ms", 200))


@step
async def fetch_payouts(context: Context, inputs: Data) -> list[Any]:
    return await fetch("payouts", inputs.get("delay_ms", 200))


@step
async def merge(context: Context, fetch_orders: list[Any], fetch_refunds: list[Any],
                fetch_payouts: list[Any]) -> Data:
    """Drops missing values and sums each source (they are cleaned
    concurrently inside this one step, with asyncio.gather)."""

    async def clean(rows: list[Any]) -> list[Any]:
        await asyncio.sleep(0.05)
        return [r for r in rows if r is not None]

    orders, refunds, payouts = await asyncio.gather(
        clean(fetch_orders), clean(fetch_refunds), clean(fetch_payouts))
    return {"orders": sum(orders), "refunds": sum(refunds), "payouts": sum(payouts),
            "net": sum(orders) - sum(refunds) - sum(payouts)}


@step
async def publish(context: Context, merge: Data) -> str:
    return f"net {merge['net']} published"


@workflow
def pipeline(wf: WorkflowBuilder) -> None:
    """Fetch in parallel, merge, publish."""
    wf.timeline([fetch_orders, fetch_refunds, fetch_payouts] >> merge >> publish)


if __name__ == "__main__":
    result = asyncio.run(pipeline.execute({"delay_ms": 200}))
    print(json.dumps({"status": result.status, "output": result.output, "steps": result.steps}, indent=2))
