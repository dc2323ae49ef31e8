"""Exceptions of the Cerebelum SDK."""


class ErrorKind:
    """The kinds of errors the engine produces (``StepError.kind``; see
    ``error`` in ``wit/cerebelum.wit``). User code may use any other kind
    (e.g. ``"transient"``); ``"error"`` is the generic one::

        except StepError as e:
            if e.kind in (ErrorKind.DEADLINE, ErrorKind.MEMORY):
                ...
    """

    CANCELLED = "cancelled"
    """The execution was cancelled by an operator."""
    TRAP = "trap"
    """The invocation panicked or trapped."""
    DEADLINE = "deadline"
    """It ran past its CPU deadline."""
    MEMORY = "memory"
    """It hit its memory limit (or the node's guest memory budget)."""
    OUTPUT = "output"
    """It wrote more than its limit to stdout and stderr."""
    FUEL = "fuel"
    """The execution burned its fuel budget."""
    STACK = "stack"
    """It overflowed its call stack."""
    PAYLOAD = "payload"
    """An input or result was larger than the tenant allows."""
    JOURNAL = "journal"
    """The execution reached its limit of journal entries."""
    NONDETERMINISM = "nondeterminism"
    """Replay found another call than the journal recorded."""
    UNKNOWN_STEP = "unknown-step"
    """The package has no step of that name."""
    INVALID_HANDLE = "invalid-handle"
    """Awaiting a step handle no step was started with."""
    POLL_TIMEOUT = "poll-timeout"
    """A poll ran past its timeout."""
    POLL_EXHAUSTED = "poll-exhausted"
    """A poll used up its checks."""
    DENIED = "denied"
    """Not allowed here (a secret read from workflow code)."""
    NOT_FOUND = "not-found"
    """No such secret."""
    ENGINE = "engine"
    """The engine failed running the execution too often."""
    CHILD_CANCELLED = "child-cancelled"
    """An awaited child workflow was cancelled."""
    QUOTA = "quota"
    """The tenant's open executions are at their limit: no child started."""

    ALL = (CANCELLED, TRAP, DEADLINE, MEMORY, OUTPUT, FUEL, STACK, PAYLOAD, JOURNAL,
           NONDETERMINISM, UNKNOWN_STEP, INVALID_HANDLE, POLL_TIMEOUT, POLL_EXHAUSTED,
           DENIED, NOT_FOUND, ENGINE, CHILD_CANCELLED, QUOTA)


class CerebelumError(Exception):
    """Base class of the SDK's exceptions."""


class DSLError(CerebelumError):
    """The original SDK's base of the workflow language's errors
    (``cerebelum.dsl.DSLError``): :class:`WorkflowDefinitionError`,
    :class:`StepDefinitionError`, :class:`DependencyError`,
    :class:`StepExecutionError`."""


class WorkflowDefinitionError(DSLError):
    """A workflow or step is defined wrongly (raised when it is defined).

    ``workflow_name`` is the workflow being defined (``None`` for a step
    defined outside one) and ``errors`` the list of what is wrong, as in
    the original SDK; ``str(e)`` says it in one message. The original's
    form ``WorkflowDefinitionError(workflow_name, errors)`` is accepted
    too, and words its message as the original did."""

    def __init__(self, message: str, errors: list[str] | None = None, *,
                 workflow_name: str | None = None):
        if errors is not None:
            # The original's signature: (workflow_name, errors).
            workflow_name, errors = message, list(errors)
            message = f"Workflow '{workflow_name}' validation failed:\n" + "\n".join(
                f"  - {e}" for e in errors)
        else:
            errors = [message]
        super().__init__(message)
        self.workflow_name = workflow_name
        self.errors = errors


class StepDefinitionError(WorkflowDefinitionError):
    """A step (or a workflow's body) is defined wrongly: not ``async``,
    no context parameter, a bad option. ``step_name`` and ``message``, as
    in the original SDK, whose ``StepDefinitionError(step_name, message)``
    reads ``Step 'NAME': MESSAGE``; ``text`` replaces that wording by a
    message that names the step itself. A :class:`WorkflowDefinitionError`
    too, so ``except WorkflowDefinitionError`` catches every mistake of
    definition."""

    def __init__(self, step_name: str, message: str, *, text: str | None = None,
                 workflow_name: str | None = None):
        super().__init__(text or f"Step '{step_name}': {message}", workflow_name=workflow_name)
        self.step_name = step_name
        self.message = text or message


class DependencyError(DSLError):
    """The original SDK's error for a step whose dependency cannot be
    resolved: ``step_name``, ``dependency``, ``reason``. (Ours finds these
    when the workflow is defined, and raises :class:`WorkflowDefinitionError`
    there; a parameter that is an input field missing from the input fails
    the step.)"""

    def __init__(self, step_name: str, dependency: str, reason: str):
        self.step_name = step_name
        self.dependency = dependency
        self.reason = reason
        super().__init__(
            f"Step '{step_name}' cannot resolve dependency '{dependency}': {reason}")


class StepExecutionError(DSLError):
    """The original SDK's error for a step that raised: ``step_name``,
    ``message``, ``original_error`` and ``execution_id``. (``execute``
    reports a failed step as :class:`ExecutionError`, whose ``step_name``
    and ``error`` say the same.)"""

    def __init__(self, step_name: str, message: str, original_error: BaseException | None = None,
                 execution_id: str | None = None):
        self.step_name = step_name
        self.message = message
        self.original_error = original_error
        self.execution_id = execution_id
        text = f"Step '{step_name}' execution failed: {message}"
        if execution_id:
            text = f"[{execution_id}] {text}"
        if original_error is not None:
            text += f"\n  Caused by: {type(original_error).__name__}: {original_error}"
        super().__init__(text)


class StepError(CerebelumError):
    """A step (or a call made for it) failed; ``str(e)`` is the message."""

    def __init__(self, message: str, kind: str = "error", details=None):
        super().__init__(message)
        self.kind = kind
        self.details = details


class ExecutionError(CerebelumError):
    """``await workflow.execute(...)``: the execution failed.

    ``str(e)`` is ``Execution failed at step 'NAME': MESSAGE``, as in the
    original SDK, or ``Execution failed: MESSAGE`` when no step failed (a
    loop that never ends, a cancellation); ``step_name`` is the failing
    step (``None`` when the workflow failed outside a step), ``message``
    what went wrong, ``error`` the step's own error text, and ``result``
    the :class:`ExecutionResult` (``status == "failed"``, every step's
    result so far in ``steps``)."""

    def __init__(self, message: str, step_name: str | None = None, error: str | None = None,
                 result=None):
        self.message = message
        self.step_name = step_name
        self.error = error
        self.result = result
        where = "" if step_name is None else f" at step '{step_name}'"
        super().__init__(f"Execution failed{where}: {message}")


class PollTimeoutError(StepError, TimeoutError):
    """``poll`` gave up: its attempts or its time ran out (a
    ``TimeoutError``, as in the original SDK)."""

    def __init__(self, message: str, kind: str = "poll-exhausted", details=None):
        super().__init__(message, kind, details)


class RetryExhaustedError(StepError):
    """``retry`` made its last attempt and it failed too."""

    def __init__(self, message: str, kind: str = "retry-exhausted", details=None):
        super().__init__(message, kind, details)


class ApprovalRejectedError(StepError):
    """``wait_for_approval``: an operator rejected; ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(f"approval rejected: {reason}", "approval-rejected")
        self.reason = reason


class ApprovalTimeoutError(StepError):
    """``wait_for_approval``: nobody decided within ``timeout_ms``."""

    def __init__(self, message: str = "approval timed out"):
        super().__init__(message, "approval-timeout")


class SignalTimeoutError(StepError):
    """``wait_for_signal``: no signal of that name came within ``timeout_ms``."""

    def __init__(self, message: str = "signal timed out"):
        super().__init__(message, "signal-timeout")


class CancelledError(StepError):
    """The execution was cancelled."""

    def __init__(self, message: str = "the execution was cancelled"):
        super().__init__(message, "cancelled")


class HttpError(StepError):
    """An HTTP request failed: ``kind`` is ``http-denied`` (host not on the
    tenant's allow-list, or not in a step), ``http-response-too-large``,
    ``http-status`` (``raise_for_status``) or ``http``."""

    def __init__(self, message: str, kind: str = "http", details=None):
        super().__init__(message, kind, details)


class SecretError(StepError):
    """A secret is not there (kind ``not-found``) or not readable here
    (``denied``)."""

    def __init__(self, message: str, kind: str = "not-found", details=None):
        super().__init__(message, kind, details)
