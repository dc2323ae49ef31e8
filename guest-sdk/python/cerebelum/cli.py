"""The command line of the SDK: ``python -m cerebelum build app.py -o
app.wasm`` (:mod:`cerebelum.build`), ``python -m cerebelum worker app.py
--queue Q`` (:mod:`cerebelum.worker`) and ``python -m cerebelum replay ID
app.py`` (:mod:`cerebelum.replay`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import build
from ._registry import STEPS
from .errors import CerebelumError

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger("cerebelum.worker")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cerebelum",
        description="Build a Python workflow file into a Cerebelum package (.wasm), run "
        "its steps as an external worker of a Cerebelum server, or replay a recorded "
        "execution against it locally to debug it.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build FILE.py into a package",
                       description="Build FILE.py (its @workflow and @step functions) into "
                       "a WebAssembly component the engine runs: `cerebelum run OUT.wasm "
                       "WORKFLOW` or `cerebelum upload OUT.wasm --name NAME`.")
    b.add_argument("file", type=Path, help="the Python file that defines the workflows")
    b.add_argument("-o", "--output", type=Path,
                   help="where to write the package (default: FILE with .wasm)")
    b.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    w = sub.add_parser(
        "worker", help="serve a worker queue with the steps of FILE.py",
        description="Run the @step functions of FILE.py for a Cerebelum server: every "
        "step of an execution started with `cerebelum start PACKAGE WORKFLOW --worker-queue "
        "QUEUE` runs here, under this Python, until SIGINT or SIGTERM (then running steps "
        "may finish, or are handed back to the queue). Needs grpcio "
        "(pip install 'cerebelum[worker]').")
    add_worker_arguments(w)
    r = sub.add_parser(
        "replay", help="debug a recorded execution: run FILE.py against its journal",
        description="Run the workflow of FILE.py under this Python with every durable call "
        "(steps' calls, sleeps, approvals, signals, HTTP, the clock) answered from execution "
        "ID's journal, fetched from the server: nothing runs live, and a breakpoint in "
        "FILE.py (or `python -m pdb -m cerebelum replay ...`) stops where production went. "
        "Prints each journal entry as the code consumes it, and where the code makes "
        "another call than the journal recorded, which entry and which line of FILE.py. "
        "Exits 0 when the code replays the journal, 1 when it diverges. Needs grpcio "
        "(pip install 'cerebelum[worker]').")
    r.add_argument("id", metavar="ID", help="the execution (`cerebelum list` shows ids)")
    r.add_argument("file", type=Path, metavar="FILE.py",
                   help="the Python file whose workflow runs against the journal")
    r.add_argument("--server", metavar="URL",
                   help="the server, http://HOST:PORT or https://HOST:PORT "
                   "(default: $CEREBELUM_SERVER)")
    r.add_argument("--ca-cert", metavar="FILE",
                   help="for an https:// server with a private CA: its certificate, PEM "
                   "(default: $CEREBELUM_CA_CERT)")
    r.add_argument("--api-key", metavar="KEY",
                   help="the tenant's API key (default: $CEREBELUM_API_KEY)")
    r.add_argument("-q", "--quiet", action="store_true",
                   help="print only the summary, not each journal entry")
    args = parser.parse_args(argv)
    if args.command == "worker":
        return worker_main(args)
    if args.command == "replay":
        return replay_main(args)
    return build_main(args)


def replay_main(args: argparse.Namespace) -> int:
    """``python -m cerebelum replay ID FILE.py``: 0 when the code replays
    the journal, 1 when it diverges or the replay cannot run."""
    from . import replay
    try:
        report = replay.replay(args.id, args.file, args.server, args.api_key, args.ca_cert,
                               out=None if args.quiet else sys.stdout)
    except CerebelumError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.quiet:
        print(report.summary())
    return 0 if report.compatible else 1


def build_main(args: argparse.Namespace) -> int:
    """``python -m cerebelum build``."""
    output = args.output or args.file.with_suffix(".wasm")
    try:
        info = build.build(args.file, output, quiet=args.quiet)
    except build.BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"built {info['output']} ({info['bytes'] / 1e6:.1f} MB, "
              f"{info['seconds']:.1f} s): workflows {', '.join(info['workflows'])}",
              file=sys.stderr)
    return 0


def import_steps(source: Path) -> list[str]:
    """Imports the Python file ``source`` (its ``@step`` functions register
    themselves); the names of every step now defined."""
    source = source.resolve()
    if not source.is_file():
        raise CerebelumError(f"{source}: no such file")
    if source.suffix != ".py":
        raise CerebelumError(f"{source}: expected a Python file (.py)")
    build.import_checked(source, CerebelumError)
    if not STEPS:
        raise CerebelumError(f"{source}: defines no step: decorate an `async def` with @step")
    return sorted(STEPS)


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m cerebelum worker``."""
    parser.add_argument("file", type=Path, metavar="FILE.py",
                        help="the Python file whose @step functions this worker runs")
    parser.add_argument("--queue", required=True,
                        help="the worker queue to serve (what `cerebelum start ... "
                        "--worker-queue QUEUE` names)")
    parser.add_argument("--concurrency", type=int, default=1, metavar="N",
                        help="tasks to run at once (default 1)")
    parser.add_argument("--server", metavar="URL",
                        help="the server, http://HOST:PORT or https://HOST:PORT "
                        "(default: $CEREBELUM_SERVER)")
    parser.add_argument("--ca-cert", metavar="FILE",
                        help="for an https:// server with a private CA: its certificate, PEM "
                        "(default: $CEREBELUM_CA_CERT, else the system's roots)")
    parser.add_argument("--api-key", metavar="KEY",
                        help="the tenant's API key (default: $CEREBELUM_API_KEY)")
    parser.add_argument("--worker-id", metavar="ID",
                        help="this worker's name, unique within the tenant (default: HOST:PID)")
    parser.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                        help="on SIGINT/SIGTERM, how long running steps may finish before "
                        "they are handed back to the queue (default 30; a second signal "
                        "stops at once)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")


async def _serve_until_signal(worker: Worker, grace: float) -> None:
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task] = []

    def on_signal(sig: signal.Signals) -> None:
        if not stopping:
            log.info("%s: stopping (running steps get %g s; send it again to stop at once)",
                     sig.name, grace)
        stopping.append(asyncio.ensure_future(worker.stop(grace if not stopping else 0)))

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    await worker.start()


def worker_main(args: argparse.Namespace) -> int:
    """``python -m cerebelum worker``: serves ``args.queue`` until SIGINT/SIGTERM."""
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        logging.getLogger("asyncio").setLevel(logging.WARNING)
    try:
        if args.concurrency < 1:
            raise CerebelumError("--concurrency must be at least 1")
        # Imported here, not above: it needs grpc and protobuf, which
        # `build` does without (and says what to install when missing).
        from .worker import Worker, install_patches
        # Before the steps' file, so that its `from datetime import
        # datetime` gets the class whose now() a step journals.
        install_patches()
        import_steps(args.file)
        if args.ca_cert:
            os.environ["CEREBELUM_CA_CERT"] = args.ca_cert
        worker = Worker(args.worker_id, args.server, api_key=args.api_key, queue=args.queue,
                        concurrency=args.concurrency)
        asyncio.run(_serve_until_signal(worker, args.grace))
    except CerebelumError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
