"""A workflow for the external-worker tests (tests/python_workers.rs) whose
middle step the package places on a worker queue (`@step(worker=...)`):
it starts a subprocess, which only a worker process can (the sandbox has
none). The other steps run in the engine's sandbox."""

import subprocess
import sys

from cerebelum import Context, step, workflow


@step
async def greet(context: Context, inputs: dict) -> dict:
    return {"greeting": f"hello {inputs['name']}"}


@step(worker="native")
async def probe(context: Context, inputs: dict, greet: dict) -> dict:
    """Asks a child process for the answer."""
    out = subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True,
                         text=True, check=True)
    return {"answer": int(out.stdout), "words": greet["greeting"].split()}


@step
async def finish(context: Context, greet: dict, probe: dict) -> dict:
    return {"summary": f"{greet['greeting']}: {probe['answer']}", "words": len(probe["words"])}


@workflow
def pyplaced(wf):
    wf.timeline(greet >> probe >> finish)
