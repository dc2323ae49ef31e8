"""The worker benchmark's Python package (engine/benches/workers.rs): a
workflow of 50 no-op steps in a row, to time a worker step's round trip
with a real Python worker."""

from functools import reduce

from cerebelum import step, workflow

STEPS = 50


def _noop(i: int):
    async def noop(context, inputs):
        return {"i": i}
    return step(name=f"noop_{i}")(noop)


CHAIN = [_noop(i) for i in range(STEPS)]


@workflow
def pychain(wf):
    wf.timeline(reduce(lambda chain, s: chain >> s, CHAIN[1:], CHAIN[0]))
