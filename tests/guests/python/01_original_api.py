"""A file written for the original Cerebelum SDK, unchanged: its name
starts with a digit (no module name), it imports the original's paths,
and it relies on the original's behaviour of `ExecutionResult.output`,
`retry`, `poll`, `sleep(..., data)`, step parameters taken from the
workflow input, and `ExecutionError`. tests/python.rs runs it locally and
in the engine and compares."""

from cerebelum import Context, ProgressReporter, step, workflow
from cerebelum.dsl.async_helpers import poll, retry, sleep


@step
async def start_process(context: Context, name: str, size: int) -> dict:
    """`name` and `size` are fields of the workflow input."""
    ProgressReporter(context).update(50, f"starting {name}")
    await sleep(50, data={"waiting_for": "boot"})
    return {"process": f"proc-{name}", "size": size}


@step
async def connect(context: Context, start_process: dict) -> dict:
    tries = []

    def attempt() -> str:
        tries.append(len(tries) + 1)
        if len(tries) < 3:
            raise ConnectionError(f"refused {len(tries)}")
        return f"connected to {start_process['process']}"

    seen = []
    banner = await retry(attempt, max_attempts=4, delay=10, backoff=2.0,
                         on_error=ConnectionError,
                         on_attempt=lambda n, last: seen.append([n, str(last) if last else None]))
    try:
        await retry(lambda: {}["missing"], max_attempts=3, delay=10, on_error=ConnectionError)
        wrong = "retried"
    except KeyError as e:  # not ConnectionError: raised at once, itself
        wrong = f"KeyError {e}"
    return {"banner": banner, "attempts": seen, "wrong_type": wrong}


@step
async def wait_ready(context: Context, start_process: dict, inputs: dict) -> dict:
    checks = []

    def check():
        checks.append(len(checks) + 1)
        return {"ready": True} if len(checks) >= inputs["ready_after"] else {}

    called = []
    state = await poll(check, interval=10, max_attempts=5,
                       on_attempt=lambda n, value: called.append([n, value]))
    try:
        await poll(lambda: 0, interval=10, max_attempts=2)
        gave_up = None
    except TimeoutError as e:
        gave_up = str(e)
    return {"state": state, "on_attempt": called, "gave_up": gave_up}


@step
async def square(context: Context, start_process: dict, connect: dict,
                 wait_ready: dict) -> dict:
    if start_process["size"] < 0:
        raise ValueError(f"size must be positive, got {start_process['size']}")
    return {"square": start_process["size"] ** 2}


@workflow
def original(wf):
    wf.timeline(start_process >> connect >> wait_ready >> square)


