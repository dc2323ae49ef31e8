"""``@workflow`` and what it returns: a workflow's definition (the graph,
:mod:`cerebelum._dsl`) that also runs itself, here (:mod:`cerebelum._local`)
or in a server (:mod:`cerebelum.distributed`). The top of the SDK: the
modules it runs workflows with do not import it."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Mapping, Protocol, overload

from ._dsl import WorkflowBuilder, WorkflowDefinition
from ._local import ApprovalHandler, SignalHandler, execute_locally
from ._runtime import ExecutionResult

#: What ``@workflow`` decorates: ``def deploy(wf: WorkflowBuilder) -> None``.
WorkflowBody = Callable[[WorkflowBuilder], object]


class Executor(Protocol):
    """What ``execute(inputs, executor=...)`` runs a workflow with:
    :class:`cerebelum.DSLLocalExecutor`, the
    :class:`cerebelum.DistributedExecutor`, or any object with an
    ``async execute(workflow, inputs)`` giving the :class:`ExecutionResult`."""

    def execute(self, workflow: Workflow, inputs: Any, /) -> Awaitable[ExecutionResult]: ...


class Workflow(WorkflowDefinition):
    """A function decorated with ``@workflow``: its body, run once at
    definition, declares the graph; ``await wf.execute(inputs)`` runs it.
    ``core_url`` is the server ``@workflow(core_url=...)`` named (``None``:
    ``$CEREBELUM_SERVER``)."""

    def __init__(self, fn: WorkflowBody, name: str | None = None, core_url: str | None = None):
        self.core_url = core_url
        super().__init__(fn, name)

    async def execute(self, inputs: Any = None, executor: Executor | None = None,
                      distributed: bool = False, max_reconnect_attempts: int = 0,
                      reconnect_max_delay: float = 60.0, *,
                      approval_handler: ApprovalHandler | None = None,
                      secrets: Mapping[str, str] | None = None, server: str | None = None,
                      api_key: str | None = None, once: bool = False,
                      signal_handler: SignalHandler | None = None) -> ExecutionResult:
        """Runs the workflow; its :class:`ExecutionResult`. Raises
        :class:`ExecutionError` when the execution fails (the failing step,
        its error, and the result so far as ``e.result``).

        By default it runs here, in this process, without an engine.
        ``approval_handler(approval_type, data)`` answers
        ``wait_for_approval``: return ``True`` or a dict to approve (the
        dict is the approval's data), ``False`` or a string (the reason) to
        reject; it may be ``async``. ``signal_handler(name)`` answers
        ``wait_for_signal`` with the signal's payload (it may be ``async``).
        ``secrets`` answers
        ``context.secret(name)`` (else the environment variable
        ``CEREBELUM_SECRET_<NAME>``). ``executor``: any object with
        ``async execute(workflow, inputs)`` runs it instead.

        ``distributed=True``: as in the original SDK, this process becomes
        a **worker server and the call does not return**: the workflow's
        file is built into a package (cached) and uploaded to a Cerebelum
        server (``server``, default the ``core_url`` of
        ``@workflow(core_url=...)``, else ``$CEREBELUM_SERVER``;
        ``api_key``, default ``$CEREBELUM_API_KEY``), which makes every
        workflow of the file startable by name
        (``DistributedExecutor(...).execute("name", ...)``); one execution
        starts with ``inputs``, and this process runs the steps of every
        execution of the package until Ctrl-C (or SIGTERM, after which it
        returns None). See :meth:`cerebelum.distributed.DistributedExecutor.serve`.
        ``distributed=True, once=True``: the one-shot form; one execution
        runs in the server with its steps here and its
        :class:`ExecutionResult` is returned, as local mode's (see
        :meth:`~cerebelum.distributed.DistributedExecutor.run`). Needs
        grpcio, protobuf and componentize-py. The worker reconnects when
        the server restarts: ``max_reconnect_attempts`` (0: without limit)
        and ``reconnect_max_delay`` (seconds between attempts, at most)
        bound it.
        """
        if executor is not None:
            return await executor.execute(self, inputs)
        if distributed:
            # Imported here, not above: it imports grpc and protobuf, which
            # local mode and a package built by `cerebelum build` do without.
            from .distributed import DistributedExecutor
            remote = DistributedExecutor(
                server or self.core_url, api_key=api_key,
                max_reconnect_attempts=max_reconnect_attempts,
                reconnect_max_delay=reconnect_max_delay)
            try:
                if once:
                    return await remote.run(self, inputs, approval_handler=approval_handler,
                                            secrets=secrets)
                await remote.serve(self, inputs, approval_handler=approval_handler,
                                   secrets=secrets)
            finally:
                await remote.close()
            # A worker server ends only when stopped (SIGTERM): nothing to give.
            return None  # type: ignore[return-value]
        return await execute_locally(self, inputs, approval_handler, secrets, signal_handler)


@overload
def workflow(fn: WorkflowBody) -> Workflow: ...


@overload
def workflow(*, name: str | None = None,
             core_url: str | None = None) -> Callable[[WorkflowBody], Workflow]: ...


def workflow(fn: WorkflowBody | None = None, *, name: str | None = None,
             core_url: str | None = None) -> Workflow | Callable[[WorkflowBody], Workflow]:
    """Declares a workflow: ``@workflow`` over ``def deploy(wf): wf.timeline(...)``.

    ``@workflow(core_url="cerebelum.example.com:7433")``, as in the
    original SDK: the server ``execute(inputs, distributed=True)`` uses
    when it is given none (``HOST:PORT``, ``http://HOST:PORT`` or
    ``https://HOST:PORT``); without it, ``$CEREBELUM_SERVER``. Local runs
    and packages ignore it."""
    def wrap(f: WorkflowBody) -> Workflow:
        return Workflow(f, name, core_url)
    return wrap(fn) if fn is not None else wrap
