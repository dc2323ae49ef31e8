"""The Python benchmark's package: no-op steps, and workflows of 1, 3 and
21 of them in a row (the difference of 21 and 1 is the cost of 20 durable
steps; 3 is the API benchmark's W3)."""

from cerebelum import step, workflow


@step
async def noop(context, inputs):
    return None


async def _noop(context, inputs):
    return None


CHAIN = [step(name=f"noop_{i}")(_noop) for i in range(20)]


@workflow
def one(wf):
    wf.timeline(noop)


@workflow
def three(wf):
    wf.timeline(noop >> CHAIN[0] >> CHAIN[1])


@workflow
def twenty_one(wf):
    chain = noop
    for s in CHAIN:
        chain = chain >> s
    wf.timeline(chain)
