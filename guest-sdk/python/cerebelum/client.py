"""The client of the Cerebelum API that workers and the distributed
executor use: the generated stubs of ``cerebelum.v1`` (:mod:`cerebelum.v1`)
over a ``grpc.aio`` channel, with the server's URL, API key and TLS
settings, and the server's errors as :class:`ServerError`.

Needs ``grpcio`` and ``protobuf`` (``pip install 'cerebelum[worker]'``):
importing this module without them raises a :class:`CerebelumError` that
says so. Local mode and packages never import it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Awaitable, Generator

from ._runtime import to_json
from .errors import CerebelumError

try:
    import grpc
    import grpc.aio

    from .v1 import cerebelum_pb2 as pb
    from .v1 import cerebelum_pb2_grpc as pb_grpc
except ImportError as e:
    missing = "protobuf" if (e.name or "").startswith("google") else "grpcio"
    raise CerebelumError(
        f"{missing} is not installed for {sys.executable}: python -m pip install "
        "'grpcio>=1.85.1' 'protobuf>=7.35.1,<8' (or the SDK with its worker extra, "
        "'cerebelum[worker]')") from None

log = logging.getLogger("cerebelum.client")

#: Executions in these states have ended.
TERMINAL = (pb.EXECUTION_STATUS_COMPLETED, pb.EXECUTION_STATUS_FAILED,
            pb.EXECUTION_STATUS_CANCELLED)
#: Errors a server that is restarting (or briefly unreachable) gives.
TRANSIENT = ("UNAVAILABLE", "DEADLINE_EXCEEDED")
#: The claim of a task is gone: its result must be dropped.
CLAIM_LOST = ("FAILED_PRECONDITION", "NOT_FOUND")


def status_name(value: int) -> str:
    """The name of an ExecutionStatus value (``completed``, ...), as
    :class:`ExecutionResult` has it."""
    try:
        return pb.ExecutionStatus.Name(value).removeprefix("EXECUTION_STATUS_").lower()
    except ValueError:
        return str(value)  # a status of a newer server


def optional(message: Any, field: str) -> Any:
    """The value of the ``optional`` (or message) field ``field`` of
    ``message``, or None when it is not set."""
    return getattr(message, field) if message.HasField(field) else None


class _Done:
    """An awaitable that is done already."""

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


class ServerError(CerebelumError):
    """A call to the Cerebelum server failed. ``code`` is the gRPC status
    name (``UNAVAILABLE``, ``UNAUTHENTICATED``, ``FAILED_PRECONDITION``,
    ...), ``details`` the server's own message."""

    def __init__(self, message: str, code: str, details: str = ""):
        super().__init__(message)
        self.code = code
        self.details = details


def parse_server(url: str) -> tuple[str, bool]:
    """The ``host:port`` gRPC target of a server URL (``http://HOST:PORT``,
    ``https://HOST:PORT`` or ``HOST:PORT``) and whether it speaks TLS."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep:
        scheme, rest = "http", url.strip()
    if scheme.lower() not in ("http", "https"):
        raise CerebelumError(f"server {url}: unknown scheme {scheme!r}; use http://HOST:PORT "
                             "(e.g. http://127.0.0.1:7433) or https://HOST:PORT")
    tls = scheme.lower() == "https"
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if authority.startswith("["):
        host, _, port = authority[1:].partition("]")
        port = port.removeprefix(":")
        host = f"[{host}]"
    else:
        host, _, port = authority.partition(":")
    if not host or host == "[]":
        raise CerebelumError(f"server {url}: no host; use http://HOST:PORT")
    if port and not port.isdigit():
        raise CerebelumError(f"server {url}: the port {port!r} is not a number")
    return f"{host}:{port or (443 if tls else 80)}", tls


def server_target(url: str) -> str:
    """The ``host:port`` gRPC target of a server URL (see :func:`parse_server`)."""
    return parse_server(url)[0]


def _read_pem(path: str | None, what: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise CerebelumError(f"cannot read the {what} {path}: {e.strerror}") from None


class Client:
    """The calls of the Cerebelum API that workers and the distributed
    executor make, over a ``grpc.aio`` channel (opened on the first call,
    in the running event loop).

    ``server`` defaults to ``$CEREBELUM_SERVER``, ``api_key`` to
    ``$CEREBELUM_API_KEY``; ``timeout`` bounds each call (seconds). An
    ``https://`` server is spoken to over TLS: its certificate is checked
    against ``ca_cert`` (a PEM file; default ``$CEREBELUM_CA_CERT``, else
    the system's roots); ``client_cert``/``client_key`` (default
    ``$CEREBELUM_CLIENT_CERT``/``$CEREBELUM_CLIENT_KEY``) for a server that
    requires client certificates, as the ``cerebelum`` CLI's flags."""

    def __init__(self, server: str | None = None, api_key: str | None = None,
                 timeout: float = 30.0, *, ca_cert: str | None = None,
                 client_cert: str | None = None, client_key: str | None = None):
        server = server or os.environ.get("CEREBELUM_SERVER")
        if not server:
            raise CerebelumError(
                "no Cerebelum server given: pass its URL (e.g. --server "
                "http://127.0.0.1:7433) or set CEREBELUM_SERVER")
        self.url = server
        self.target, self.tls = parse_server(server)
        env = os.environ.get
        self._tls_files = (ca_cert or env("CEREBELUM_CA_CERT"),
                           client_cert or env("CEREBELUM_CLIENT_CERT"),
                           client_key or env("CEREBELUM_CLIENT_KEY"))
        if not self.tls and any(self._tls_files):
            raise CerebelumError(
                f"server {server}: a CA or client certificate was given, but the URL is not "
                "https:// (nothing was sent)")
        if bool(self._tls_files[1]) != bool(self._tls_files[2]):
            raise CerebelumError("a client certificate and its key go together: give both, "
                                 "or neither")
        key = api_key if api_key is not None else os.environ.get("CEREBELUM_API_KEY")
        key = (key or "").strip()
        self._metadata = (("authorization", f"Bearer {key}"),) if key else ()
        self.timeout = timeout
        self._channel: Any = None
        self._stubs: tuple[Any, ...] = ()

    def _open(self) -> tuple[Any, ...]:
        """The stubs of services Cerebelum and WorkerService, on the channel
        (opened now if it is not)."""
        if self._channel is None:
            options = [
                # Reconnect soon after a server restart (the default
                # waits up to two minutes).
                ("grpc.initial_reconnect_backoff_ms", 250),
                ("grpc.min_reconnect_backoff_ms", 250),
                ("grpc.max_reconnect_backoff_ms", 2000),
                ("grpc.enable_http_proxy", 0),
                ("grpc.max_receive_message_length", 64 << 20),
            ]
            if self.tls:
                ca, cert, key = self._tls_files
                credentials = grpc.ssl_channel_credentials(
                    root_certificates=_read_pem(ca, "CA certificate"),
                    private_key=_read_pem(key, "client key"),
                    certificate_chain=_read_pem(cert, "client certificate"))
                self._channel = grpc.aio.secure_channel(self.target, credentials,
                                                        options=options)
            else:
                self._channel = grpc.aio.insecure_channel(self.target, options=options)
            self._stubs = (pb_grpc.CerebelumStub(self._channel),
                           pb_grpc.WorkerServiceStub(self._channel))
        return self._stubs

    async def call(self, rpc: str, request: Any, timeout: float | None = None) -> Any:
        """Calls ``rpc``, a method of service Cerebelum or WorkerService
        (``"PollTask"``), with ``request``, its request message
        (:mod:`cerebelum.v1.cerebelum_pb2`); its response message. Raises
        :class:`ServerError`."""
        api, workers = self._open()
        method = getattr(api if hasattr(api, rpc) else workers, rpc)
        timeout = self.timeout if timeout is None else timeout
        try:
            return await method(request, metadata=self._metadata, timeout=timeout)
        except grpc.aio.AioRpcError as e:
            raise self._error(rpc, e.code().name, e.details() or "", timeout) from None

    async def wait_end(self, execution_id: str) -> Any:
        """Waits for an execution to end, however long it takes (its sleeps
        may last days): a ``WatchExecution`` stream with ``end_only``, on
        which the server sends the final record alone and does nothing per
        step. The ended execution (``pb.Execution``). Raises
        :class:`ServerError`, e.g. ``UNAVAILABLE`` if the server went away
        meanwhile; calling again resumes the wait."""
        api, _ = self._open()
        try:
            stream = api.WatchExecution(
                pb.WatchExecutionRequest(id=execution_id, end_only=True),
                metadata=self._metadata)
            async for event in stream:
                if event.HasField("finished"):
                    return event.finished
        except grpc.aio.AioRpcError as e:
            raise self._error("WatchExecution", e.code().name, e.details() or "",
                              self.timeout) from None
        raise ServerError(f"WatchExecution: the server at {self.url} ended the stream before "
                          "the execution ended", "UNAVAILABLE")

    async def wait_ended(self, execution: Any, serving: asyncio.Task | None = None) -> Any:
        """Waits for ``execution`` (a ``pb.Execution``) to end, however long
        it takes: :meth:`wait_end`, again after a transient error (the
        server restarting), or a look every 100 ms while the tenant has no
        watch stream left. With ``serving`` (a task serving the execution's
        steps, e.g. an in-process worker), its error is raised if it ends
        first. The ended execution."""
        failures = 0
        look = False
        while execution.status not in TERMINAL:
            if look:
                await asyncio.sleep(0.1)
                waited = self.call("GetExecution", pb.GetExecutionRequest(id=execution.id))
            else:
                waited = self.wait_end(execution.id)
            ended = asyncio.ensure_future(waited)
            try:
                if serving is not None:
                    await asyncio.wait({ended, serving}, return_when=asyncio.FIRST_COMPLETED)
                    if not ended.done():
                        serving.result()  # the worker's error
                        raise CerebelumError(
                            "the in-process worker stopped before the execution ended")
                execution = await ended
                failures = 0
            except ServerError as e:
                # The tenant's watch streams are all open (max streams):
                # look at the execution now and then instead.
                look = e.code == "RESOURCE_EXHAUSTED"
                if look:
                    continue
                if e.code not in TRANSIENT:
                    raise
                failures += 1
                delay = min(5.0, 0.2 * 2 ** failures)
                log.warning("%s; trying again in %.1f s", e, delay)
                await asyncio.sleep(delay)
            finally:
                ended.cancel()
        return execution

    async def run(self, request: Any) -> tuple[Any, Any]:
        """Starts an execution and waits for its end on one call
        (``RunExecution``, ``request`` a ``pb.StartExecutionRequest``):
        ``(started, ended)``, the ``StartExecutionResponse`` (``created``
        is false when the idempotency key was used before: it is that
        execution) and the ended ``pb.Execution``. If the call breaks
        after the start (the server restarted), the wait goes on with
        :meth:`wait_ended`; before it, nothing may have started, and the
        :class:`ServerError` is raised (with an idempotency key, calling
        again is safe)."""
        api, _ = self._open()
        started = None
        try:
            stream = api.RunExecution(request, metadata=self._metadata)
            async for event in stream:
                if event.HasField("started"):
                    started = event.started
                elif event.HasField("finished"):
                    if started is None:
                        break
                    return started, event.finished
        except grpc.aio.AioRpcError as e:
            error = self._error("RunExecution", e.code().name, e.details() or "", self.timeout)
            if started is None or error.code not in TRANSIENT:
                raise error from None
            log.warning("%s; waiting for execution %s again", error, started.execution.id)
        if started is None:
            raise ServerError(f"RunExecution: the server at {self.url} answered without "
                              "starting the execution", "INTERNAL")
        return started, await self.wait_ended(started.execution)

    async def signal(self, execution_id: str, name: str, payload: Any = None,
                     signal_id: str | None = None) -> dict:
        """Sends signal ``name`` with ``payload`` (JSON) to an execution, as
        ``cerebelum signal`` does: stored at once and taken by the
        workflow's next ``wait_for_signal(name)``. With a ``signal_id`` sent
        before, nothing is sent again. ``{"seq": n, "created": bool}``."""
        reply = await self.call("Signal", pb.SignalRequest(
            id=execution_id, name=name, payload_json=to_json(payload, "the signal payload"),
            signal_id=signal_id or ""))
        return {"seq": reply.signal.seq, "created": reply.created}

    def _error(self, rpc: str, code: str, details: str, timeout: float) -> ServerError:
        if code == "UNAVAILABLE":
            text = (f"cannot reach the Cerebelum server at {self.url} ({details}): is "
                    "`cerebelum serve` running and listening there (--listen)?")
            if self.tls:
                text += (" Is its certificate signed by a CA this client trusts (--ca-cert "
                         "or CEREBELUM_CA_CERT)?")
        elif code == "UNAUTHENTICATED":
            text = f"the server at {self.url} refused the API key: {details}"
            if "CEREBELUM_API_KEY" not in details:
                text += " (pass --api-key / api_key=..., or set CEREBELUM_API_KEY)"
        elif code == "DEADLINE_EXCEEDED":
            text = f"{rpc}: the server at {self.url} did not answer within {timeout:g} s"
        else:
            text = f"{rpc} failed ({code}): {details}"
        return ServerError(text, code, details)

    def close_soon(self) -> Awaitable[None]:
        """Closes the channel from code that does not await (the original
        SDK's ``executor.close()``): in the running event loop, as a task,
        which the awaitable returned waits for; with no loop running, the
        channel (bound to a loop that is gone) is dropped."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._channel, self._stubs = None, ()
            return _Done()
        return loop.create_task(self.close())

    async def close(self) -> None:
        """Closes the channel (a later call opens another)."""
        channel, self._channel, self._stubs = self._channel, None, ()
        if channel is not None:
            await channel.close()
