"""The original SDK's distributed mode: workflows in a Cerebelum server,
their steps in Python processes.

* ``await wf.execute(inputs, distributed=True)`` (:meth:`DistributedExecutor.serve`)
  is a **worker server**: it builds and uploads the workflow's file, so that
  every workflow of the file can be started by name in the tenant, starts
  one execution with ``inputs``, and serves the package's queue (every step
  of the file) until Ctrl-C or SIGTERM. It never returns on its own.
* :meth:`DistributedExecutor.execute` starts a workflow by name (one that a
  worker server registered; it need not be defined in this process) or
  from a :class:`Workflow`, and returns at once with ``.execution_id`` and
  ``.status``.
* ``await wf.execute(inputs, distributed=True, once=True)``
  (:meth:`DistributedExecutor.run`) runs one execution on a queue of its
  own, serves it here and returns its :class:`ExecutionResult`.

A worker server of package ``P`` version ``V`` serves queue ``py-P-vV``
(:func:`package_queue`); an execution started by name goes to that queue.

Needs ``grpcio`` and ``protobuf`` (``pip install 'cerebelum[worker]'``)
and, to build a file, componentize-py (``[build]``).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
import os
import signal
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable

from . import build
from ._dsl import WorkflowDefinition, find_workflow
from ._registry import WORKFLOWS
from ._runtime import ExecutionResult, failure, iso_time, to_json
from .client import Client, ServerError, status_name
from .errors import CerebelumError
from .v1 import cerebelum_pb2 as pb
from .worker import Worker

log = logging.getLogger("cerebelum.distributed")


def cache_dir() -> Path:
    """Where built packages are kept: ``$CEREBELUM_CACHE_DIR/python-packages``
    or ``~/.cache/cerebelum/python-packages``."""
    base = os.environ.get("CEREBELUM_CACHE_DIR")
    root = Path(base) if base else Path.home() / ".cache" / "cerebelum"
    return root / "python-packages"


def build_package(source: Path) -> Path:
    """``source`` built into a package (``cerebelum.build``), cached by the
    SHA-256 of the file and of the SDK (modules it imports besides are not
    part of the key)."""
    sdk = Path(__file__).resolve().parent
    digest = hashlib.sha256(source.read_bytes())
    for f in sorted(sdk.glob("*.py")) + sorted(sdk.glob("wit/*.wit")):
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    out = cache_dir() / f"{source.stem}-{digest.hexdigest()[:32]}.wasm"
    if out.is_file():
        return out
    log.info("building %s into a package (cached in %s)", source, out.parent)
    # Built aside, then linked into place: of two processes building the
    # same file at once, the first to finish wins and both use its bytes
    # (componentize-py's output differs from build to build, and another
    # sha256 would be another package version).
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f"{out.stem}.{os.getpid()}.partial.wasm")
    try:
        build.build(source, partial, quiet=True)
        try:
            os.link(partial, out)
        except FileExistsError:
            pass
    except build.BuildError as e:
        raise CerebelumError(f"building {source.name} into a package for the server "
                             f"failed: {e}") from None
    finally:
        partial.unlink(missing_ok=True)
    return out


def _source_of(workflow: WorkflowDefinition) -> Path:
    source = inspect.getsourcefile(workflow.fn)
    if source is None or not Path(source).is_file():
        raise CerebelumError(f"workflow `{workflow.name}` was not defined in a file, so it "
                             "cannot be built into a package: define it in a .py file")
    return Path(source).resolve()


def _datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def execution_result(execution: pb.Execution) -> ExecutionResult:
    """An Execution message as the :class:`ExecutionResult` local mode
    gives; raises the :class:`ExecutionError` local mode raises when the
    execution failed."""
    status = status_name(execution.status)
    ran: Any = None
    error = step = step_error = None
    if execution.HasField("result_json"):
        ran = json.loads(execution.result_json)
    if execution.error_json:
        err = json.loads(execution.error_json)
        error = err.get("message") or json.dumps(err)
        ran = err.get("details")
        if isinstance(ran, dict):
            step, step_error = ran.get("step"), ran.get("step_error")
    if not (isinstance(ran, dict) and "steps" in ran):
        # Not the form this SDK's workflows end with (a Rust package's
        # result, or no result): the result as it is, no steps.
        ran = {"output": ran if execution.HasField("result_json") else None, "steps": {}}
    result = ExecutionResult(execution_id=execution.id, status=status,
                             output=ran.get("output"), error=error,
                             started_at=iso_time(_datetime(execution.created_at_ms)),
                             completed_at=iso_time(_datetime(execution.updated_at_ms)),
                             steps=ran["steps"])
    if status != "completed":
        raise failure(result, step, step_error)
    return result


def package_queue(package: str, version: int) -> str:
    """The worker queue of a package version, ``py-NAME-vVERSION``: what
    its worker server (``execute(distributed=True)``) serves and where an
    execution started by name (:meth:`DistributedExecutor.execute`) goes.
    A name too long for a queue (128 characters) is shortened and hashed."""
    queue = f"py-{package}-v{version}"
    if len(queue) > 128:
        digest = hashlib.sha256(package.encode()).hexdigest()[:16]
        queue = f"py-{package[:96]}-{digest}-v{version}"
    return queue


def started_result(execution: pb.Execution) -> ExecutionResult:
    """An execution just started, as the original's ``execute`` returned
    it: ``execution_id``, ``status`` (``pending``, ``running``, ...) and
    ``started_at``; no output yet."""
    return ExecutionResult(execution_id=execution.id, status=status_name(execution.status),
                           started_at=iso_time(_datetime(execution.created_at_ms)))


def _show_logs() -> logging.Handler | None:
    """A worker server shows what it does, as the original's printed it:
    when the program configured no logging, the SDK's INFO lines go to
    stderr (the handler, to remove afterwards)."""
    sdk = logging.getLogger("cerebelum")
    if logging.getLogger().handlers or sdk.handlers:
        return None
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    sdk.addHandler(handler)
    if sdk.level == logging.NOTSET:
        sdk.setLevel(logging.INFO)
    return handler


class DistributedExecutor:
    """Starts workflows in a Cerebelum server; serves their steps.

    ``core_url`` is the server: ``HOST:PORT`` as the original wrote it
    (``"localhost:9090"``), ``http://HOST:PORT`` or ``https://HOST:PORT``;
    default ``$CEREBELUM_SERVER``. ``api_key`` defaults to
    ``$CEREBELUM_API_KEY``. ``timeout`` bounds each call to the server
    (seconds). ``worker_id`` names the workers it runs. Close it with
    :meth:`close` (``executor.close()`` or ``await executor.close()``), or
    use it as a context manager (``with`` or ``async with``).

    * :meth:`execute` starts a workflow and returns at once;
    * :meth:`serve` is ``wf.execute(inputs, distributed=True)``: a worker
      server that never returns on its own;
    * :meth:`run` is ``wf.execute(inputs, distributed=True, once=True)``:
      one execution, served here, its result.
    """

    def __init__(self, core_url: str | None = None, worker_id: str = "python-executor",
                 timeout: float = 30.0, api_key: str | None = None, *,
                 max_reconnect_attempts: int = 0, reconnect_max_delay: float = 60.0):
        self._client = Client(core_url, api_key, timeout)
        self.core_url = self._client.url
        self.worker_id = worker_id
        self.timeout = timeout
        self._api_key = api_key
        self.max_reconnect_attempts = max_reconnect_attempts
        self.reconnect_max_delay = reconnect_max_delay

    # -- starting -----------------------------------------------------------

    async def execute(self, workflow: WorkflowDefinition | str, input_data: Any = None, *,
                      package: str | None = None, queue: str | None = None) -> ExecutionResult:
        """Starts ``workflow`` on ``input_data`` and returns at once (as the
        original did): an :class:`ExecutionResult` with ``execution_id``,
        ``status`` (``pending`` or ``running``) and ``started_at``; follow
        the execution with :class:`cerebelum.execution_client.ExecutionClient`
        or ``cerebelum status``.

        ``workflow`` is a name (``"hello_workflow"``): the workflow of that
        name in a package of the tenant, which a worker server
        (``execute(distributed=True)``) uploaded; it need not be defined in
        this process. When several package versions have it, the one whose
        queue a worker polled most recently wins, else the newest
        (``package=`` picks the package). Or a :class:`Workflow`: its file
        is built and uploaded first. Its steps run on the package's queue
        (:func:`package_queue`; ``queue=`` for another), served by the
        worker server; until one polls it the execution waits for it.
        """
        input_json = to_json(input_data, "the workflow input")
        if isinstance(workflow, WorkflowDefinition):
            uploaded = await self._upload(_source_of(workflow))
            version, name = uploaded.version, workflow.name
            package = uploaded.name
        else:
            found = await self._find(workflow, package)
            version, name, package = found.version, workflow, found.name
        started = await self._client.call("StartExecution", pb.StartExecutionRequest(
            package=package, version=version, workflow=name, input_json=input_json,
            worker_queue=queue or package_queue(package, version)))
        execution = started.execution
        log.info("started execution %s of workflow %s (package %s v%d, queue %s)",
                 execution.id, name, package, version, execution.worker_queue)
        return started_result(execution)

    async def _find(self, workflow: str, package: str | None) -> pb.Package:
        """The package version a start of ``workflow`` by name runs."""
        packages = (await self._client.call("ListPackages", pb.ListPackagesRequest())).packages
        having = [p for p in packages if (package is None or p.name == package)
                  and any(w.name == workflow for w in p.workflows)]
        if not having:
            names = sorted({w.name for p in packages for w in p.workflows
                            if package is None or p.name == package})
            where = f"package {package!r}" if package else "this tenant's packages"
            local = (" It is defined in this process: pass the workflow itself to upload it."
                     if workflow in WORKFLOWS else "")
            raise CerebelumError(
                f"no workflow named {workflow!r} in {where} on {self.core_url} (they have: "
                f"{', '.join(names) or 'none'}). Start the worker server that defines it "
                f"(`await {workflow}.execute(inputs, distributed=True)` in its file) "
                f"first.{local}")
        polled: dict[str, int] = {}
        for w in (await self._client.call("ListWorkers", pb.ListWorkersRequest())).workers:
            polled[w.queue] = max(polled.get(w.queue, 0), w.last_seen_at_ms)

        def rank(p: pb.Package) -> tuple:
            seen = polled.get(package_queue(p.name, p.version))
            return (seen is not None, seen or 0, p.created_at_ms, p.version)

        best = max(having, key=rank)
        if package_queue(best.name, best.version) not in polled:
            log.warning("no worker serves %s v%d (queue %s) yet: the execution waits for one",
                        best.name, best.version, package_queue(best.name, best.version))
        return best

    async def _upload(self, source: Path) -> pb.Package:
        """``source`` built (cached) and uploaded; the same bytes keep their
        version."""
        package = await asyncio.to_thread(build_package, source)
        return await self._client.call(
            "UploadPackage", pb.UploadPackageRequest(name=source.stem, wasm=package.read_bytes()),
            timeout=max(self.timeout, 300))

    def _worker(self, worker_id: str, queue: str, concurrency: int,
                approval_handler: Callable | None, secrets: dict | None) -> Worker:
        return Worker(worker_id, self.core_url, max_reconnect_attempts=self.max_reconnect_attempts,
                      reconnect_max_delay=self.reconnect_max_delay, api_key=self._api_key,
                      queue=queue, concurrency=concurrency, approval_handler=approval_handler,
                      secrets=secrets)

    # -- a worker server ------------------------------------------------------

    async def serve(self, workflow: WorkflowDefinition | str, input_data: Any = None, *,
                    approval_handler: Callable | None = None, secrets: dict | None = None,
                    concurrency: int = 4, grace: float = 30.0) -> None:
        """``await wf.execute(inputs, distributed=True)``: runs as the
        original's worker server and **does not return** until it is
        stopped.

        Builds the workflow's file into a package and uploads it (so that
        every workflow of the file can be started by name:
        :meth:`execute`), starts one execution of ``workflow`` on
        ``input_data``, and serves the package's queue
        (:func:`package_queue`) with every ``@step`` of this process,
        ``concurrency`` at a time, until Ctrl-C (the asyncio task is
        cancelled: running steps are handed back at once) or SIGTERM (they
        get ``grace`` seconds, then are handed back; it returns None).
        When the program configured no logging, it logs what it does to
        stderr. Raises :class:`ServerError` when the server refuses it or
        stays unreachable beyond ``max_reconnect_attempts``.
        """
        wf = find_workflow(workflow)
        input_json = to_json(input_data, "the workflow input")
        shown = _show_logs()
        try:
            uploaded = await self._upload(_source_of(wf))
            queue = package_queue(uploaded.name, uploaded.version)
            worker_id = (f"python-{wf.name}-{uuid.uuid4().hex[:8]}"
                         if self.worker_id == "python-executor" else self.worker_id)
            worker = self._worker(worker_id, queue, concurrency, approval_handler, secrets)
            log.info("worker server of %s v%d: workflows %s; queue %s", uploaded.name,
                     uploaded.version, ", ".join(w.name for w in uploaded.workflows), queue)
            left = await self._left_open(uploaded.name, uploaded.version, queue)
            if left:
                log.info("resuming %d execution(s) an earlier run left open on %s: %s",
                         len(left), queue, ", ".join(left[:10]) + (" …" if len(left) > 10 else ""))
            serving = asyncio.create_task(worker.start())
            stop_on_sigterm = _on_sigterm(lambda: worker.stop(grace))
            watching = None
            try:
                started = await self._client.call("StartExecution", pb.StartExecutionRequest(
                    package=uploaded.name, version=uploaded.version, workflow=wf.name,
                    input_json=input_json, worker_queue=queue))
                log.info("started execution %s of %s; serving until Ctrl-C",
                         started.execution.id, wf.name)
                watching = asyncio.create_task(self._report(started.execution))
                await serving
            finally:
                stop_on_sigterm()
                if watching is not None:
                    watching.cancel()
                if not serving.done():
                    await worker.stop(grace=0)
                await asyncio.gather(serving, return_exceptions=True)
        finally:
            if shown is not None:
                logging.getLogger("cerebelum").removeHandler(shown)

    async def _left_open(self, package: str, version: int, queue: str) -> list[str]:
        """The ids of open executions of ``package`` v``version`` served on
        ``queue`` (an earlier run of this worker server left them): this
        run's worker picks up their steps."""
        left: list[str] = []
        for status in (pb.EXECUTION_STATUS_PENDING, pb.EXECUTION_STATUS_RUNNING,
                       pb.EXECUTION_STATUS_WAITING):
            token = ""
            while True:
                page = await self._client.call("ListExecutions", pb.ListExecutionsRequest(
                    status=status, package=package, page_size=1000, page_token=token))
                left += [e.id for e in page.executions
                         if e.package_version == version and e.worker_queue == queue]
                token = page.next_page_token
                if not token:
                    break
        return left

    async def _report(self, execution: pb.Execution) -> None:
        """Logs how the worker server's first execution ends."""
        try:
            ended = await self._client.wait_ended(execution)
        except ServerError as e:
            log.warning("following execution %s: %s", execution.id, e)
            return
        error = json.loads(ended.error_json).get("message") if ended.error_json else None
        log.info("execution %s %s%s", ended.id, status_name(ended.status),
                 f": {error}" if error else "")

    # -- one execution --------------------------------------------------------

    async def run(self, workflow: WorkflowDefinition | str, input_data: Any = None, *,
                  approval_handler: Callable | None = None,
                  secrets: dict | None = None) -> ExecutionResult:
        """``await wf.execute(inputs, distributed=True, once=True)``: runs
        ``workflow`` (a :class:`Workflow` or the name of one defined in
        this process) on ``input_data`` in the server, its steps here; its
        :class:`ExecutionResult`, as local mode gives it.

        Builds the workflow's file into a package (cached), uploads it (the
        same bytes give the existing version), starts an execution on a
        fresh worker queue and serves that queue with an in-process
        :class:`Worker` until the execution ends. Interrupted, it cancels
        the execution (nobody would serve its queue).
        """
        wf = find_workflow(workflow)
        input_json = to_json(input_data, "the workflow input")
        uploaded = await self._upload(_source_of(wf))
        queue = f"py-{uuid.uuid4().hex}"
        started = await self._client.call("StartExecution", pb.StartExecutionRequest(
            package=uploaded.name, version=uploaded.version, workflow=wf.name,
            input_json=input_json, worker_queue=queue))
        execution = started.execution
        log.info("execution %s of %s v%d runs its steps here (queue %s)", execution.id,
                 uploaded.name, uploaded.version, queue)
        worker = self._worker(f"{self.worker_id}-{queue[3:15]}", queue, 4, approval_handler,
                              secrets)
        worker.register_workflow(wf)
        serving = asyncio.create_task(worker.start())
        try:
            execution = await self._client.wait_ended(execution, serving)
        except BaseException:
            await self._cancel(execution.id)
            raise
        finally:
            await worker.stop(grace=5)
            await asyncio.gather(serving, return_exceptions=True)
        return execution_result(execution)

    async def _cancel(self, execution_id: str) -> None:
        """Best effort: nobody will serve the execution's queue any more."""
        try:
            await self._client.call("Cancel", pb.CancelRequest(id=execution_id), timeout=5)
            log.warning("execution %s cancelled: its run here was interrupted", execution_id)
        except (ServerError, asyncio.CancelledError) as e:
            log.warning("cancelling execution %s: %s", execution_id, e)

    # -- closing --------------------------------------------------------------

    def close(self) -> Awaitable[None]:
        """Closes the connection to the server: ``executor.close()``, as in
        the original, or ``await executor.close()`` to wait until it is."""
        return self._client.close_soon()

    def __enter__(self) -> DistributedExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> DistributedExecutor:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._client.close()


def _on_sigterm(stop: Callable[[], Awaitable[None]]) -> Callable[[], None]:
    """Stops a worker server gracefully on SIGTERM, when the program has no
    SIGTERM handler of its own (and runs the loop in the main thread); the
    function that removes it again."""
    loop = asyncio.get_running_loop()
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        return lambda: None
    try:
        loop.add_signal_handler(signal.SIGTERM,
                                lambda: asyncio.ensure_future(stop()))
    except (NotImplementedError, RuntimeError):
        return lambda: None

    def remove() -> None:
        loop.remove_signal_handler(signal.SIGTERM)
    return remove
