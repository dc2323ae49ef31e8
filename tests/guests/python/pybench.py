"""The Python benchmark's package: no-op steps, and workflows of 1, 3, 21,
100 and 500 of them in a row (the difference of 21 and 1 is the cost of 20
durable steps; 3 is the API benchmark's W3; 100 and 500 are W1 of
`scripts/bench-peers.sh`, quick and full)."""

from cerebelum import step, workflow


@step
async def noop(context, inputs):
    return None


async def _noop(context, inputs):
    return None


# A timeline names each step once: a chain of n steps is n distinct steps.
CHAIN = [step(name=f"noop_{i}")(_noop) for i in range(499)]


def _chain(n):
    chain = noop
    for s in CHAIN[: n - 1]:
        chain = chain >> s
    return chain


@workflow
def one(wf):
    wf.timeline(noop)


@workflow
def three(wf):
    wf.timeline(noop >> CHAIN[0] >> CHAIN[1])


@workflow
def twenty_one(wf):
    wf.timeline(_chain(21))


@workflow
def chain_100(wf):
    wf.timeline(_chain(100))


@workflow
def chain_500(wf):
    wf.timeline(_chain(500))
