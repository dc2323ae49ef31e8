"""Worker steps that wait for a person, or for a signal, between two side
effects (tests/python_workers.rs). On an external worker both waits are
durable: the server opens the approval (`cerebelum approve ID ship`) or
hands over the signal (`cerebelum signal ID go`), the task is handed back
until then, and the step goes on after the wait on whichever worker takes
the task, without marking "before" again."""

from cerebelum import Context, retry, step, wait_for_approval, wait_for_signal, workflow


def mark(path: str, what: str) -> str:
    with open(path, "a") as f:
        f.write(what + "\n")
    return what


@step
async def gate(context: Context, inputs: dict) -> dict:
    await retry(mark, inputs["marks"], "before")
    decision = await wait_for_approval("ship", {"version": inputs["version"]},
                                       timeout_ms=inputs.get("timeout_ms"))
    await retry(mark, inputs["marks"], "after")
    return {"decision": decision}


@workflow
def pyapprove(wf):
    wf.timeline(gate)


@step
async def listen(context: Context, inputs: dict) -> dict:
    await retry(mark, inputs["marks"], "before")
    got = await wait_for_signal("go", timeout_ms=inputs.get("timeout_ms"))
    await retry(mark, inputs["marks"], "after")
    return {"got": got}


@workflow
def pysignal(wf):
    wf.timeline(listen)
