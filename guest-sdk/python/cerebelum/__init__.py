"""Cerebelum: durable workflows in Python.

The same file runs two ways:

* **locally**, under plain CPython, for development:
  ``result = await deploy.execute({"name": "web-1"})``;
* **durably**, inside the Cerebelum engine, once built into a package:
  ``cerebelum build app.py -o app.wasm`` (or ``python -m cerebelum build``),
  then ``cerebelum run app.wasm deploy --input '{"name": "web-1"}'``. Each
  step is journaled; sleeps, polls, approvals and signals survive engine
  restarts.

::

    from cerebelum import step, workflow, Context, sleep

    @step
    async def create_droplet(context: Context, inputs: dict) -> dict:
        return {"droplet_id": "d-1"}

    @step
    async def wait_for_ip(context: Context, create_droplet: dict) -> dict:
        await sleep(5000)
        return {"ip": "10.0.0.1"}

    @workflow
    def deploy(wf):
        wf.timeline(create_droplet >> wait_for_ip)
"""

from typing import TYPE_CHECKING, Any

from . import http
from ._dsl import (ParallelStepGroup, RetryPolicy, Step, StepComposition, WorkflowBuilder,
                   step)
from ._helpers import (ProgressReporter, deprecate_patch, patched, poll, retry, set_state,
                       sleep, wait_for_approval, wait_for_signal)
from ._local import DSLLocalExecutor, LocalExecutor
from ._registry import StepRegistry, WorkflowRegistry
from ._runtime import Context, ExecutionResult
from ._workflow import Workflow, workflow
from .errors import (ApprovalRejectedError, ApprovalTimeoutError, CancelledError,
                     CerebelumError, ErrorKind, ExecutionError, HttpError, PollTimeoutError,
                     RetryExhaustedError, SecretError, SignalTimeoutError, StepError,
                     WorkflowDefinitionError)

#: The original SDK's names for what ``@step`` and ``@workflow`` return.
StepMetadata = Step
WorkflowMetadata = Workflow

__version__ = "0.1.0"


if TYPE_CHECKING:
    # What __getattr__ gives, for type checkers; they do not see
    # __getattr__ itself, which would make every misspelt name `Any`.
    from . import dsl
    from .distributed import DistributedExecutor
    from .execution_client import (ApprovalInfo, ExecutionClient, ExecutionState,
                                   ExecutionStatus, SleepInfo, StepStatus)
    from .worker import Worker
else:
    def __getattr__(name: str) -> Any:
        # `Worker` and `DistributedExecutor` on first use: they import grpc
        # and protobuf, which local mode and a package built by `cerebelum
        # build` do without. `cerebelum.dsl` likewise, for the original
        # SDK's import paths.
        if name == "Worker":
            from .worker import Worker
            return Worker
        if name == "DistributedExecutor":
            from .distributed import DistributedExecutor
            return DistributedExecutor
        if name in ("ExecutionClient", "ExecutionStatus", "ExecutionState", "StepStatus",
                    "SleepInfo", "ApprovalInfo"):
            from . import execution_client
            return getattr(execution_client, name)
        if name == "dsl":
            import importlib
            return importlib.import_module(".dsl", __name__)
        raise AttributeError(f"module 'cerebelum' has no attribute {name!r}")

__all__ = [
    "step", "workflow", "Context", "ExecutionResult", "sleep", "patched", "deprecate_patch",
    "poll", "retry", "wait_for_approval", "wait_for_signal", "set_state", "SignalTimeoutError",
    "ProgressReporter", "RetryPolicy", "Step", "Workflow",
    "WorkflowBuilder", "CerebelumError", "WorkflowDefinitionError", "StepError",
    "PollTimeoutError", "RetryExhaustedError", "ApprovalRejectedError",
    "ApprovalTimeoutError", "CancelledError", "HttpError", "SecretError", "http",
    "ErrorKind", "ExecutionError", "StepMetadata", "WorkflowMetadata", "DSLLocalExecutor",
    "LocalExecutor", "StepComposition", "ParallelStepGroup", "StepRegistry", "WorkflowRegistry",
]
