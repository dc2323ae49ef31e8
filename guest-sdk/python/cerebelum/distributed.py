"""Workflows in a Cerebelum server, their steps in this process:
:class:`DistributedExecutor` (and ``await wf.execute(inputs,
distributed=True)``) builds and uploads the workflow's file, starts an
execution on a fresh queue and serves that queue with an in-process
:class:`Worker` until the execution ends.

Needs ``grpcio`` and ``protobuf`` (``pip install 'cerebelum[worker]'``)
and componentize-py (``[build]``).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from . import build
from ._dsl import WorkflowDefinition, find_workflow
from ._runtime import ExecutionResult, failure, iso_time, to_json
from .client import TERMINAL, TRANSIENT, Client, ServerError, status_name
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
        ran = {"output": None, "steps": {}}
    result = ExecutionResult(execution_id=execution.id, status=status,
                             output=ran.get("output"), error=error,
                             started_at=iso_time(_datetime(execution.created_at_ms)),
                             completed_at=iso_time(_datetime(execution.updated_at_ms)),
                             steps=ran["steps"])
    if status != "completed":
        raise failure(result, step, step_error)
    return result


class DistributedExecutor:
    """Runs workflows in a Cerebelum server, their steps in this process.

    :meth:`execute` builds the workflow's file into a package (cached),
    uploads it (the same bytes give the existing version), starts an
    execution on a fresh worker queue and serves that queue with an
    in-process :class:`Worker` until the execution ends. ``core_url`` and
    ``api_key`` default to ``$CEREBELUM_SERVER`` and ``$CEREBELUM_API_KEY``;
    ``timeout`` bounds each call to the server (seconds), not the run.
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

    async def execute(self, workflow: WorkflowDefinition | str, input_data: Any = None, *,
                      approval_handler: Callable | None = None,
                      secrets: dict | None = None) -> ExecutionResult:
        """Runs ``workflow`` (a :class:`Workflow` or its name) on
        ``input_data``; its :class:`ExecutionResult`."""
        wf = find_workflow(workflow)
        input_json = to_json(input_data, "the workflow input")
        source = _source_of(wf)
        package = await asyncio.to_thread(build_package, source)
        client = self._client
        try:
            uploaded = await client.call(
                "UploadPackage", pb.UploadPackageRequest(name=source.stem,
                                                         wasm=package.read_bytes()),
                timeout=max(self.timeout, 300))
            queue = f"py-{uuid.uuid4().hex}"
            started = await client.call("StartExecution", pb.StartExecutionRequest(
                package=uploaded.name, version=uploaded.version, workflow=wf.name,
                input_json=input_json, worker_queue=queue))
            execution = started.execution
            log.info("execution %s of %s v%d runs its steps here (queue %s)", execution.id,
                     uploaded.name, uploaded.version, queue)
            worker = Worker(f"{self.worker_id}-{queue[3:15]}", self.core_url,
                            max_reconnect_attempts=self.max_reconnect_attempts,
                            reconnect_max_delay=self.reconnect_max_delay,
                            api_key=self._api_key, queue=queue, concurrency=4,
                            approval_handler=approval_handler, secrets=secrets)
            worker.register_workflow(wf)
            serving = asyncio.create_task(worker.start())
            try:
                execution = await self._wait(execution, serving)
            except BaseException:
                await self._cancel(execution.id)
                raise
            finally:
                await worker.stop(grace=5)
                await asyncio.gather(serving, return_exceptions=True)
            return execution_result(execution)
        finally:
            await client.close()

    async def _wait(self, execution: pb.Execution, serving: asyncio.Task) -> pb.Execution:
        """Polls GetExecution (every 100 ms) until the execution ended."""
        failures = 0
        while execution.status not in TERMINAL:
            if serving.done():
                serving.result()  # the worker's error
                raise CerebelumError("the in-process worker stopped before the execution ended")
            await asyncio.sleep(0.1)
            try:
                execution = await self._client.call(
                    "GetExecution", pb.GetExecutionRequest(id=execution.id))
                failures = 0
            except ServerError as e:
                if e.code not in TRANSIENT:
                    raise
                failures += 1
                delay = min(5.0, 0.2 * 2 ** failures)
                log.warning("%s; trying again in %.1f s", e, delay)
                await asyncio.sleep(delay)
        return execution

    async def _cancel(self, execution_id: str) -> None:
        """Best effort: nobody will serve the execution's queue any more."""
        try:
            await self._client.call("Cancel", pb.CancelRequest(id=execution_id), timeout=5)
            log.warning("execution %s cancelled: its run here was interrupted", execution_id)
        except (ServerError, asyncio.CancelledError) as e:
            log.warning("cancelling execution %s: %s", execution_id, e)
