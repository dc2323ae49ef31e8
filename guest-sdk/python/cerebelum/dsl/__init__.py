"""The original SDK's ``cerebelum.dsl`` module: the workflow language under
its old import paths (``from cerebelum.dsl import step, workflow``). The
same objects as ``cerebelum``'s own names."""

from .._dsl import (ParallelStepGroup, RetryPolicy, Step, StepComposition, ValidationReport,
                    WorkflowBuilder, step)
from .._local import DSLLocalExecutor
from .._registry import StepRegistry, WorkflowRegistry
from .._runtime import Context, ExecutionResult
from .._workflow import Workflow, workflow
from ..errors import (CerebelumError, DependencyError, DSLError, ExecutionError,
                      RetryExhaustedError, StepDefinitionError, StepError, StepExecutionError,
                      WorkflowDefinitionError)
from .async_helpers import ProgressReporter, poll, retry, sleep, wait_for_approval

#: The original SDK's name for a step's metadata (what ``@step`` returns).
StepMetadata = Step
#: The original SDK's name for a workflow's metadata (what ``@workflow`` returns).
WorkflowMetadata = Workflow

__all__ = [
    "step", "workflow", "Context", "StepMetadata", "WorkflowMetadata", "WorkflowBuilder",
    "RetryPolicy", "DSLLocalExecutor", "ExecutionResult", "sleep", "poll", "retry",
    "wait_for_approval", "ProgressReporter", "CerebelumError", "ExecutionError",
    "StepError", "RetryExhaustedError", "WorkflowDefinitionError", "StepComposition",
    "ParallelStepGroup", "StepRegistry", "WorkflowRegistry", "ValidationReport", "DSLError",
    "StepDefinitionError", "DependencyError", "StepExecutionError",
]
