import asyncio

import pytest

from cerebelum import _registry


@pytest.fixture(autouse=True)
def fresh_registry():
    """Each test defines its own steps; names may repeat across tests."""
    steps, workflows = dict(_registry.STEPS), dict(_registry.WORKFLOWS)
    _registry.STEPS.clear()
    _registry.WORKFLOWS.clear()
    yield
    _registry.STEPS.clear()
    _registry.WORKFLOWS.clear()
    _registry.STEPS.update(steps)
    _registry.WORKFLOWS.update(workflows)


def run(coro):
    return asyncio.run(coro)
