import asyncio

import pytest

from cerebelum import _dsl


@pytest.fixture(autouse=True)
def fresh_registry():
    """Each test defines its own steps; names may repeat across tests."""
    steps, workflows = dict(_dsl.STEPS), dict(_dsl.WORKFLOWS)
    _dsl.STEPS.clear()
    _dsl.WORKFLOWS.clear()
    yield
    _dsl.STEPS.clear()
    _dsl.WORKFLOWS.clear()
    _dsl.STEPS.update(steps)
    _dsl.WORKFLOWS.update(workflows)


def run(coro):
    return asyncio.run(coro)
