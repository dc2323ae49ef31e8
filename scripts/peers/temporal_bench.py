"""Temporal's side of scripts/bench-peers.sh: W1, W2, W2 fan-out and W3
through a running Temporal server (`temporal server start-dev`), with a
worker and the client in this process (as Cerebelum's bench drives its
server from one), and the CPU time the server (`--server-pid`) and this
process spent per W1 step.

A step is an activity (recorded in the workflow's history, as a Cerebelum
step is in its journal), not a local activity. The workflow runs unsandboxed:
the sandbox would only add Python work on Temporal's side.

Prints one line: `PEERS_JSON {...}` with the same keys as
`cargo bench --bench api -- --peers-json`.
"""

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

QUEUE = "bench-peers"


@activity.defn
async def noop(i: int) -> int:
    return i


@workflow.defn
class ManySteps:
    @workflow.run
    async def run(self, n: int) -> int:
        for i in range(n):
            await workflow.execute_activity(
                noop, i, start_to_close_timeout=timedelta(seconds=60)
            )
        return n


@workflow.defn
class FanOut:
    @workflow.run
    async def run(self, n: int) -> int:
        await asyncio.gather(
            *(
                workflow.execute_activity(
                    noop, i, start_to_close_timeout=timedelta(seconds=60)
                )
                for i in range(n)
            )
        )
        return n


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of process `pid` so far (/proc/PID/stat)."""
    if pid is None:
        return None
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def per_step_ms(before, after, steps: int) -> float | None:
    return None if before is None or after is None else (after - before) * 1e3 / steps


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[round((len(values) - 1) * p)]


async def run(client: Client, workflow_run, n: int) -> float:
    """A workflow run with input n, start to its result: seconds."""
    t = time.perf_counter()
    result = await client.execute_workflow(
        workflow_run, n, id=f"bench-{uuid.uuid4()}", task_queue=QUEUE
    )
    assert result == n, result
    return time.perf_counter() - t


async def many_steps(client: Client, n: int) -> float:
    return await run(client, ManySteps.run, n)


async def fan_out_one(client: Client, n: int) -> float:
    return await run(client, FanOut.run, n)


async def fan_out(client: Client, count: int) -> float:
    t = time.perf_counter()
    await asyncio.gather(*(many_steps(client, 1) for _ in range(count)))
    return time.perf_counter() - t


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", default="127.0.0.1:7233")
    parser.add_argument("--w1-steps", type=int, default=500)
    parser.add_argument("--w2-count", type=int, default=1000)
    parser.add_argument("--w3-runs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--durability", default="")
    parser.add_argument("--server-pid", type=int)
    args = parser.parse_args()

    client = await Client.connect(args.address)
    async with Worker(
        client,
        task_queue=QUEUE,
        workflows=[ManySteps, FanOut],
        activities=[noop],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        for _ in range(5):
            await many_steps(client, 3)
        w1_start = time.time()
        server_before, own_before = cpu_seconds(args.server_pid), time.process_time()
        w1 = [await many_steps(client, args.w1_steps) for _ in range(args.repeats)]
        server_after, own_after = cpu_seconds(args.server_pid), time.process_time()
        w1_window = [w1_start, time.time()]
        w2 = [await fan_out(client, args.w2_count) for _ in range(args.repeats)]
        w2f = [await fan_out_one(client, args.w2_count) for _ in range(args.repeats)]
        w3 = [await many_steps(client, 3) * 1e3 for _ in range(args.w3_runs)]
    w1_steps_total = args.w1_steps * args.repeats
    line = {
        "system": "temporal",
        "durability": args.durability,
        "w1_steps": args.w1_steps,
        "w1_s": percentile(w1, 0.5),
        "w1_runs": args.repeats,
        "w1_window": w1_window,
        "w1_server_cpu_ms": per_step_ms(server_before, server_after, w1_steps_total),
        # The worker (and the client) in this process.
        "w1_sdk_cpu_ms": per_step_ms(own_before, own_after, w1_steps_total),
        "w2_count": args.w2_count,
        "w2_s": percentile(w2, 0.5),
        "w2f_s": percentile(w2f, 0.5),
        "w3_runs": args.w3_runs,
        "w3_p50_ms": percentile(w3, 0.5),
        "w3_p99_ms": percentile(w3, 0.99),
    }
    print("PEERS_JSON " + json.dumps(line), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
    # The SDK's core threads can abort the interpreter's finalization
    # ("PyGILState_Release ... finalizing"): the result is out, skip it.
    sys.stdout.flush()
    os._exit(0)
