"""The original SDK's execution client: where executions stand, with its
types (:class:`ExecutionState`, :class:`ExecutionStatus`,
:class:`StepStatus`, :class:`SleepInfo`, :class:`ApprovalInfo`), over the
server's ``GetExecution``, ``GetJournal`` and ``ListExecutions``::

    client = ExecutionClient(core_url="localhost:7433")
    status = await client.get_execution_status("ex_...")
    print(f"{status.workflow_name}: {status.status.value}, {status.progress_percentage:.0f}%")
    executions, total, has_more = await client.list_executions(status=ExecutionState.RUNNING)
    client.close()

The types need nothing; :class:`ExecutionClient` needs ``grpcio`` and
``protobuf`` (``pip install 'cerebelum[worker]'``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, Awaitable, Dict, List, Optional

from ._registry import WORKFLOWS

if TYPE_CHECKING:
    from ._runtime import ExecutionResult
    from .v1 import cerebelum_pb2 as pb


class ExecutionState(Enum):
    """Where an execution stands. The original's seven states, with the
    original's values, and three it did not have: ``PENDING`` (not picked
    up by the engine yet), ``CANCELLED``, and ``WAITING`` (for a signal or
    a child workflow). An execution whose step runs on a worker is
    ``RUNNING``; one paused by an operator is ``PAUSED``."""

    UNSPECIFIED = "EXECUTION_STATE_UNSPECIFIED"
    RUNNING = "EXECUTION_RUNNING"
    COMPLETED = "EXECUTION_COMPLETED"
    FAILED = "EXECUTION_FAILED"
    SLEEPING = "EXECUTION_SLEEPING"
    WAITING_FOR_APPROVAL = "EXECUTION_WAITING_FOR_APPROVAL"
    PAUSED = "EXECUTION_PAUSED"
    PENDING = "EXECUTION_PENDING"
    CANCELLED = "EXECUTION_CANCELLED"
    WAITING = "EXECUTION_WAITING"


@dataclass
class StepStatus:
    """Status of a single workflow step."""

    step_name: str
    step_index: int
    status: str  # "completed", "failed", "running"
    started_at: Optional[datetime]
    completed_at: Optional[datetime]
    duration_seconds: int
    output: Optional[Dict[str, Any]]
    error: Optional[Dict[str, str]]


@dataclass
class SleepInfo:
    """Information about a sleeping workflow."""

    duration_ms: int
    sleep_started_at: Optional[datetime]
    remaining_ms: int
    data: Optional[Dict[str, Any]]


@dataclass
class ApprovalInfo:
    """Information about a workflow waiting for approval."""

    approval_type: str
    data: Optional[Dict[str, Any]]
    timeout_ms: int
    requested_at: Optional[datetime]
    remaining_timeout_ms: int


@dataclass
class ExecutionStatus:
    """Complete status of a workflow execution.

    Provides detailed information about a workflow execution including:
    - Basic info (execution_id, workflow_name, status)
    - Progress (current_step_index, total_steps)
    - Completed steps with their outputs
    - Inputs and step outputs
    - Error information if failed
    - Sleep/approval state if paused

    Times are naive datetimes in local time, as the original's. Besides
    the original's fields: ``package`` and ``package_version`` (what runs),
    ``waiting_on`` (a line per wait, as ``cerebelum status`` shows) and
    ``output`` (the workflow's output once completed). ``total_steps`` is
    the number of steps of the workflow when it is defined in this
    process, else (until it ends) 0.
    """

    execution_id: str
    workflow_name: str
    status: ExecutionState
    started_at: Optional[datetime]
    completed_at: Optional[datetime]

    # Progress info
    current_step_index: int
    total_steps: int
    current_step_name: str
    progress_percentage: float

    # Completed steps
    completed_steps: List[StepStatus]

    # Inputs and outputs
    inputs: Dict[str, Any]
    step_outputs: Dict[str, Dict[str, Any]]

    # Error if failed
    error: Optional[Dict[str, str]]

    # Sleep/Approval state
    sleep_info: Optional[SleepInfo]
    approval_info: Optional[ApprovalInfo]

    # Timing
    elapsed_seconds: Optional[int]

    package: str = ""
    package_version: int = 0
    waiting_on: List[str] = field(default_factory=list)
    output: Any = None


# ------------------------------------------------------- from the server's


def _time(ms: Optional[int]) -> Optional[datetime]:
    return datetime.fromtimestamp(ms / 1000) if ms else None


def _json(text: str, default: Any = None) -> Any:
    try:
        return json.loads(text) if text else default
    except ValueError:
        return default


def state_of(execution: pb.Execution) -> ExecutionState:
    """The :class:`ExecutionState` of an Execution message (a
    ``waiting`` one is told apart by ``waiting_on``, which GetExecution
    fills)."""
    from .client import status_name  # grpc, only when there is a message

    status = status_name(execution.status)
    ended = {"completed": ExecutionState.COMPLETED, "failed": ExecutionState.FAILED,
             "cancelled": ExecutionState.CANCELLED}
    if status in ended:
        return ended[status]
    if execution.paused:
        return ExecutionState.PAUSED
    if status == "pending":
        return ExecutionState.PENDING
    if status == "running":
        return ExecutionState.RUNNING
    if status != "waiting":
        return ExecutionState.UNSPECIFIED
    if any(a.status == "pending" for a in execution.pending_approvals):
        return ExecutionState.WAITING_FOR_APPROVAL
    lines = list(execution.waiting_on)
    if any(line.startswith("sleep ") for line in lines):
        return ExecutionState.SLEEPING
    if any(line.startswith(("step ", "poll ")) for line in lines):
        return ExecutionState.RUNNING
    return ExecutionState.WAITING


def _error(error_json: Optional[str]) -> Optional[Dict[str, str]]:
    if not error_json:
        return None
    err = _json(error_json, {}) or {}
    details = err.get("details")
    trace = details.get("traceback", "") if isinstance(details, dict) else ""
    return {"kind": str(err.get("kind", "")), "message": str(err.get("message", "")),
            "stacktrace": trace or ""}


def _steps_from_journal(entries: List[Any]) -> tuple[List[StepStatus], Optional[SleepInfo]]:
    """The steps called so far (in call order) and an open sleep, from
    journal entries (GetJournal)."""
    calls: Dict[int, Any] = {}
    answers: Dict[int, Any] = {}
    sleeps: Dict[int, Any] = {}
    for e in entries:
        if e.kind in ("call-step", "start-step"):
            calls[e.seq] = e
        elif e.kind == "sleep":
            sleeps[e.seq] = e
        elif e.kind == "result" and e.HasField("ref_seq"):
            answers[e.ref_seq] = e
    steps = []
    for index, (seq, call) in enumerate(sorted(calls.items())):
        name = (_json(call.payload_json, {}).get("args") or {}).get("step", "")
        answer = answers.get(seq)
        started = _time(call.at_ms)
        if answer is None:
            steps.append(StepStatus(name, index, "running", started, None, 0, None, None))
            continue
        ended = _time(answer.at_ms)
        payload = _json(answer.payload_json, {}) or {}
        value, error = payload.get("ok"), None
        if "err" in payload:
            err = payload["err"] or {}
            error = {"kind": str(err.get("kind", "")), "message": str(err.get("message", "")),
                     "stacktrace": ""}
        elif isinstance(value, dict) and "error" in value and "ok" not in value:
            error = {"kind": "step", "message": str(value["error"]), "stacktrace": ""}
        elif isinstance(value, dict) and "ok" in value:
            value = value["ok"]  # a Python step's envelope
        duration = int((answer.at_ms - call.at_ms) / 1000)
        steps.append(StepStatus(name, index, "failed" if error else "completed", started, ended,
                                duration, None if error else value, error))
    sleep = None
    for seq, e in sorted(sleeps.items()):
        if seq in answers:
            continue
        payload = _json(e.payload_json, {}) or {}
        duration = int((payload.get("args") or {}).get("duration_ms", 0))
        due = int(payload.get("due_at", e.at_ms + duration))
        now = datetime.now().timestamp() * 1000
        sleep = SleepInfo(duration, _time(e.at_ms), max(0, int(due - now)), None)
    return steps, sleep


def _approval(execution: pb.Execution) -> Optional[ApprovalInfo]:
    for a in execution.pending_approvals:
        if a.status != "pending":
            continue
        request = _json(a.request_json, {}) or {}
        data = request.get("data", request) if isinstance(request, dict) else request
        timeout = int(request.get("timeout_ms") or 0) if isinstance(request, dict) else 0
        remaining = 0
        if execution.HasField("wake_at_ms") and timeout:
            remaining = max(0, int(execution.wake_at_ms - datetime.now().timestamp() * 1000))
        return ApprovalInfo(a.key, data if isinstance(data, dict) else {"value": data}, timeout,
                            None, remaining)
    return None


def execution_status(execution: pb.Execution, journal: Optional[List[Any]] = None
                     ) -> ExecutionStatus:
    """An :class:`ExecutionStatus` from an Execution message and, when
    given, its journal entries (for the steps of a running execution)."""
    state = state_of(execution)
    ended = state in (ExecutionState.COMPLETED, ExecutionState.FAILED, ExecutionState.CANCELLED)
    result = _json(execution.result_json, None) if execution.HasField("result_json") else None
    error = _error(execution.error_json)
    steps, sleep = _steps_from_journal(journal) if journal is not None else ([], None)
    if not steps:
        # The steps an ended execution ran, from its result (or, failed,
        # from the result so far its error carries).
        ran = result
        if ran is None and execution.error_json:
            ran = (_json(execution.error_json, {}) or {}).get("details")
        if isinstance(ran, dict) and isinstance(ran.get("steps"), dict):
            steps = [StepStatus(name, i, "completed", None, None, 0, value, None)
                     for i, (name, value) in enumerate(ran["steps"].items())]
            if ran.get("step") and ran.get("step_error") is not None:
                steps.append(StepStatus(ran["step"], len(steps), "failed", None, None, 0, None,
                                        {"kind": "step", "message": str(ran["step_error"]),
                                         "stacktrace": ""}))
    done = [s for s in steps if s.status != "running"]
    running = [s for s in steps if s.status == "running"]
    defined = WORKFLOWS.get(execution.workflow)
    total = len(defined.steps()) if defined is not None else (len(steps) if ended else 0)
    total = max(total, len(done))
    started = _time(execution.created_at_ms)
    completed = _time(execution.updated_at_ms) if ended else None
    current = running[0].step_name if running else ""
    if not current:
        current = next((line[5:] for line in execution.waiting_on if line.startswith("step ")),
                       "")
    return ExecutionStatus(
        execution_id=execution.id,
        workflow_name=execution.workflow,
        status=state,
        started_at=started,
        completed_at=completed,
        current_step_index=len(done),
        total_steps=total,
        current_step_name=current,
        progress_percentage=(len(done) / total * 100) if total else 0.0,
        completed_steps=done,
        inputs=_json(execution.input_json, {}) or {},
        step_outputs={s.step_name: s.output for s in done if s.status == "completed"},
        error=error,
        sleep_info=sleep if state == ExecutionState.SLEEPING else None,
        approval_info=_approval(execution),
        elapsed_seconds=int(((completed or datetime.now()) - started).total_seconds())
        if started else None,
        package=execution.package,
        package_version=execution.package_version,
        waiting_on=list(execution.waiting_on),
        output=result.get("output") if isinstance(result, dict) else result,
    )


# ------------------------------------------------------------------- client

#: The server's statuses each state is found among (ListExecutions
#: filters by one server status at a time).
_SERVER_STATUSES = {
    ExecutionState.RUNNING: ("running", "waiting"),
    ExecutionState.SLEEPING: ("waiting",),
    ExecutionState.WAITING_FOR_APPROVAL: ("waiting",),
    ExecutionState.WAITING: ("waiting",),
    ExecutionState.PAUSED: ("pending", "running", "waiting"),
    ExecutionState.PENDING: ("pending",),
    ExecutionState.COMPLETED: ("completed",),
    ExecutionState.FAILED: ("failed",),
    ExecutionState.CANCELLED: ("cancelled",),
}


class ExecutionClient:
    """Client for querying workflow execution status from Cerebelum.

    Provides methods to:
    - Get detailed status of a specific execution
    - List executions with filtering and pagination
    - Resume paused or failed executions
    - Run a workflow of an uploaded package and get its result

    ``core_url`` is the server, ``HOST:PORT`` as the original wrote it,
    ``http://HOST:PORT`` or ``https://HOST:PORT`` (default
    ``$CEREBELUM_SERVER``); ``api_key`` defaults to
    ``$CEREBELUM_API_KEY``. Errors are :class:`cerebelum.client.ServerError`
    (``.code`` is the gRPC status name: ``NOT_FOUND``, ...).

    Example:
        >>> client = ExecutionClient(core_url="localhost:7433")
        >>> status = await client.get_execution_status("ex_...")
        >>> print(f"Progress: {status.progress_percentage}%")
        >>> executions, total, has_more = await client.list_executions(
        ...     status=ExecutionState.RUNNING)
        >>> await client.resume_execution("ex_...")
        >>> client.close()
    """

    def __init__(self, core_url: Optional[str] = None, api_key: Optional[str] = None,
                 timeout: float = 30.0):
        # Imported here: the types above need no grpc.
        from .client import Client
        self._client = Client(core_url, api_key, timeout)
        self.core_url = self._client.url

    async def _get(self, execution_id: str) -> pb.Execution:
        from .v1 import cerebelum_pb2 as pb
        return await self._client.call("GetExecution", pb.GetExecutionRequest(id=execution_id))

    async def get_execution_status(self, execution_id: str) -> ExecutionStatus:
        """Get the status of a specific workflow execution (GetExecution,
        and GetJournal for its steps).

        Raises :class:`cerebelum.client.ServerError` (code ``NOT_FOUND``)
        when there is no such execution.
        """
        from .v1 import cerebelum_pb2 as pb
        execution = await self._get(execution_id)
        journal = await self._client.call("GetJournal", pb.GetJournalRequest(id=execution_id))
        return execution_status(execution, list(journal.entries))

    async def list_executions(
        self,
        workflow_name: Optional[str] = None,
        status: Optional[ExecutionState] = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[List[ExecutionStatus], int, bool]:
        """List workflow executions with optional filtering, newest first.

        Returns ``(executions, total_count, has_more)``. It reads every
        page of the matching executions (ListExecutions), and asks each
        waiting one where it stands (GetExecution) to tell a sleep from an
        approval or a running worker step; the steps of an execution that
        has not ended are not listed (:meth:`get_execution_status` has them).
        """
        from .client import status_name
        from .v1 import cerebelum_pb2 as pb
        limit = max(1, min(100, limit))
        wanted = _SERVER_STATUSES.get(status) if status is not None else (None,)
        found: Dict[str, pb.Execution] = {}
        for server_status in wanted or ():
            value = (pb.ExecutionStatus.Value(f"EXECUTION_STATUS_{server_status.upper()}")
                     if server_status else pb.EXECUTION_STATUS_UNSPECIFIED)
            token = ""
            while True:
                page = await self._client.call("ListExecutions", pb.ListExecutionsRequest(
                    status=value, workflow=workflow_name or "", page_size=1000,
                    page_token=token))
                for e in page.executions:
                    found[e.id] = e
                token = page.next_page_token
                if not token:
                    break
        executions = []
        for e in sorted(found.values(), key=lambda e: (e.created_at_ms, e.id), reverse=True):
            if status_name(e.status) == "waiting":
                e = await self._get(e.id)
            if status is None or state_of(e) == status:
                executions.append(e)
        page = [execution_status(e) for e in executions[offset:offset + limit]]
        return page, len(executions), offset + limit < len(executions)

    async def list_active_workflows(self) -> List[ExecutionStatus]:
        """All running workflows (at most 100)."""
        executions, _, _ = await self.list_executions(status=ExecutionState.RUNNING, limit=100)
        return executions

    async def resume_execution(self, execution_id: str,
                               skip_completed_steps: bool = True) -> str:
        """Resume a paused or failed workflow execution: ``"resumed"``
        (a paused one resumed, or a failed one retried from its journal:
        its completed steps are not run again), ``"already_running"``, or
        ``"failed_to_resume"`` (it completed or was cancelled).
        ``skip_completed_steps`` must be true: the journal keeps what ran.
        """
        from .v1 import cerebelum_pb2 as pb
        if not skip_completed_steps:
            raise ValueError("an execution resumes from its journal: completed steps are "
                             "never run again (skip_completed_steps=False is not supported)")
        execution = await self._get(execution_id)
        state = state_of(execution)
        if state == ExecutionState.PAUSED:
            await self._client.call("Resume", pb.ResumeRequest(id=execution_id))
            return "resumed"
        if state == ExecutionState.FAILED:
            await self._client.call("Retry", pb.RetryRequest(id=execution_id))
            return "resumed"
        if state in (ExecutionState.COMPLETED, ExecutionState.CANCELLED):
            return "failed_to_resume"
        return "already_running"

    async def run(self, package: str, workflow: str, inputs: Any = None, *,
                  version: Optional[int] = None,
                  idempotency_key: Optional[str] = None) -> ExecutionResult:
        """Run ``workflow`` of an uploaded ``package`` (the newest version,
        or ``version``) in the server's sandbox on ``inputs`` and wait for
        its end: one ``RunExecution`` call, as ``cerebelum start --wait``.

        Returns the :class:`cerebelum.ExecutionResult` local mode gives
        (``output`` and ``steps``; a package not built with this SDK
        gives its result as ``output``); a failed or cancelled execution
        raises :class:`cerebelum.ExecutionError`, as in local mode. The
        same ``idempotency_key`` again gives the execution it started
        first (and its end), never a second one. A server that restarts
        meanwhile is waited for; the execution goes on in it. Errors are
        :class:`cerebelum.client.ServerError`: ``NOT_FOUND`` for no such
        package, ``INVALID_ARGUMENT`` for no such workflow in it.

        Example:
            >>> result = await client.run("orders", "checkout", {"order": 7})
            >>> result.output
        """
        from ._runtime import to_json
        from .distributed import execution_result
        from .v1 import cerebelum_pb2 as pb
        request = pb.StartExecutionRequest(
            package=package, workflow=workflow, input_json=to_json(inputs, "the workflow input"),
            version=version, idempotency_key=idempotency_key)
        _, ended = await self._client.run(request)
        return execution_result(ended)

    def close(self) -> Awaitable[None]:
        """Close the connection: ``client.close()``, as in the original, or
        ``await client.close()`` to wait until it is closed."""
        return self._client.close_soon()
