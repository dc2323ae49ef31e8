"""Debugging a recorded execution locally: ``python -m cerebelum replay ID
FILE.py`` runs the workflow of FILE.py under this CPython with every
durable call answered from execution ID's journal, fetched over the API.

Nothing runs live: a step's ``sleep`` returns at once, an approval or a
signal gets the decision the execution got, an HTTP request gets the
response the journal recorded (it is not sent), ``time.time()`` in a step
reads the clock its first run read. The code itself is yours and runs
here, so a breakpoint in your editor, ``breakpoint()`` or ``python -m pdb
-m cerebelum replay ...`` stops in it exactly where production went.

Each journal entry is printed as the code consumes it. Where the code
makes another call than the journal recorded (another step, other
arguments), the replay stops and says which entry, what was recorded, what
the code called and from which line of FILE.py: the new code would not
replay this execution (``cerebelum upload --check`` says the same for every
open execution, in the engine).

A step that ran in the sandbox runs again here, attempt by attempt, its
calls answered from its own part of the journal; the workflow then goes
on with the result the journal recorded, and a step whose result differs
is reported (a step that draws random numbers does: the sandbox's are the
engine's). A step that ran on an external worker is not run again (its
history is the worker task's, not the journal's): its recorded result is
used. Secrets are read from ``CEREBELUM_SECRET_<NAME>`` when set, else are
``"[redacted]"``, as the journal has them.

:func:`replay` is the same from Python; :func:`replay_journal` replays
entries already fetched (what the tests give it).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import _patches
from ._dsl import Step
from ._loop import DurableLoop
from ._registry import WORKFLOWS, workflow_names
from ._runtime import (Runtime, exception_text, invoke_step_json, print_progress,
                       run_workflow, to_json, value_of)
from .errors import (ApprovalRejectedError, ApprovalTimeoutError, CerebelumError, HttpError,
                     PollTimeoutError, SignalTimeoutError, StepError)

#: Journal entries that are events, not calls user code made (the
#: engine's bookkeeping); everything else with an ``args_hash`` is a call.
_EVENTS = {"result", "attempt", "attempt-failed", "served", "poll-check", "output", "usage",
           "started", "completed", "failed", "cancelled", "retried", "upgraded"}


@dataclass
class Entry:
    """One journal entry, as ``GetJournal`` gives it."""

    seq: int
    invocation: str
    kind: str
    payload: Any
    ref_seq: int | None = None

    @property
    def is_call(self) -> bool:
        return self.kind not in _EVENTS

    @staticmethod
    def from_pb(e: Any) -> "Entry":
        return Entry(seq=e.seq, invocation=e.invocation, kind=e.kind,
                     payload=json.loads(e.payload_json or "null"),
                     ref_seq=e.ref_seq if e.HasField("ref_seq") else None)


@dataclass
class Execution:
    """What the replay needs of the execution itself."""

    id: str
    workflow: str
    inputs: Any
    created_at_ms: int
    status: str = "running"
    package: str = ""
    version: int = 0


class Divergence(CerebelumError):
    """The code made another call than the journal recorded at ``seq``."""

    def __init__(self, seq: int, recorded: str, called: str, where: str | None):
        at = f" at {where}" if where else ""
        super().__init__(f"diverges at entry {seq}: recorded {recorded}, the code called "
                         f"{called}{at}")
        self.seq = seq
        self.recorded = recorded
        self.called = called
        self.where = where


class JournalEnd(BaseException):
    """The journal ends here: the execution had not gone further (it
    waits, or runs). A ``BaseException``, so user code's ``except
    Exception`` does not swallow it."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


@dataclass
class Report:
    """What :func:`replay` found."""

    execution: Execution
    #: Calls of the journal the code made again, and calls in it.
    replayed: int = 0
    calls: int = 0
    #: The divergence, if the code made another call.
    divergence: Divergence | None = None
    #: Why the replay stopped before the journal's end (the execution
    #: waits or runs), if it did.
    ended: str | None = None
    #: How the workflow ended here: ``completed``/``failed``, or None.
    status: str | None = None
    #: Steps whose attempt ended otherwise here than it did (step, what).
    differences: list[tuple[str, str]] = field(default_factory=list)

    @property
    def compatible(self) -> bool:
        return self.divergence is None

    def summary(self) -> str:
        e = self.execution
        what = f"execution {e.id} of {e.package + ' v' + str(e.version) if e.package else e.workflow}"
        if self.divergence is not None:
            return f"{what} {self.divergence}"
        text = f"{what} replayed through call {self.replayed} of {self.calls}"
        if self.ended:
            text += f": the journal ends there ({self.ended})"
        elif self.status:
            text += f": the workflow {self.status}, as it did" \
                if self.status == e.status else \
                f": the workflow {self.status} here, {e.status} in the engine"
        if self.differences:
            text += f"; {len(self.differences)} step attempt(s) ended differently"
        return text


class Journal:
    """An execution's journal, by invocation."""

    def __init__(self, entries: list[Entry]):
        self.entries = sorted(entries, key=lambda e: e.seq)
        self.calls: dict[str, list[Entry]] = {}
        self.results: dict[int, Any] = {}
        self.attempts: dict[int, list[Entry]] = {}
        self.failed: dict[tuple[int, int], Any] = {}
        for e in self.entries:
            if e.is_call:
                self.calls.setdefault(e.invocation, []).append(e)
            elif e.kind == "result" and e.ref_seq is not None:
                self.results[e.ref_seq] = e.payload
            elif e.kind == "attempt" and e.ref_seq is not None:
                self.attempts.setdefault(e.ref_seq, []).append(e)
            elif e.kind == "attempt-failed" and e.ref_seq is not None:
                self.failed[(e.ref_seq, e.payload.get("attempt", 0))] = e.payload.get("error")

    def result(self, seq: int) -> Any:
        """The recorded answer of the call at ``seq`` (``{"ok": v}`` or
        ``{"error": {...}}``), or None when it has none yet."""
        return self.results.get(seq)


def _show(kind: str, args: Any) -> str:
    """A call as the divergence message shows it: ``call-step("charge", …)``."""
    if isinstance(args, dict):
        for name in ("step", "check_step", "name", "key", "id", "workflow", "url"):
            if isinstance(args.get(name), str):
                return f"{kind}({args[name]!r}, …)" if len(args) > 1 else f"{kind}({args[name]!r})"
        if "duration_ms" in args:
            return f"{kind}({args['duration_ms']} ms)"
    return f"{kind}({json.dumps(args)[:80]})" if args not in (None, {}) else f"{kind}()"


class Replayer:
    """Walks the journal as the code makes its calls, and prints it."""

    def __init__(self, journal: Journal, execution: Execution, source: Path | None,
                 out: TextIO | None):
        self.journal = journal
        self.execution = execution
        self.source = source.resolve() if source else None
        self.out = out
        self.replayed = 0
        #: The invocation whose calls the code makes now.
        self.invocation = "wf"
        self.positions: dict[str, int] = {}
        #: Steps whose attempt ended otherwise here than it did.
        self.differences: list[tuple[str, str]] = []
        #: The replay stopped (a divergence, the journal's end): what
        #: user code raises after that is its unwinding, not an outcome.
        self.over = False

    def say(self, text: str) -> None:
        if self.out is not None:
            print(text, file=self.out, flush=True)

    def where(self) -> str | None:
        """The innermost line of the user's file on the stack."""
        if self.source is None:
            return None
        frames = [(f.filename, f.lineno, f.name) for f in reversed(traceback.extract_stack())]
        try:
            # A sleep is made by the loop while every task waits: the
            # line is in a suspended task's chain of awaits, innermost
            # last.
            for task in asyncio.all_tasks():
                chain = []
                coro: Any = task.get_coro()
                while coro is not None:
                    frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
                    if frame is not None:
                        chain.append((frame.f_code.co_filename, frame.f_lineno,
                                      frame.f_code.co_name))
                    coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
                frames += reversed(chain)
        except RuntimeError:
            pass  # no loop runs
        for filename, line, name in frames:
            try:
                if Path(filename).resolve() == self.source:
                    return f"{self.source.name}:{line} in {name}"
            except OSError:
                continue
        return None

    def peek(self) -> Entry | None:
        calls = self.journal.calls.get(self.invocation, [])
        at = self.positions.get(self.invocation, 0)
        return calls[at] if at < len(calls) else None

    def take(self, kind: str, args: Any = None, *, compare: bool = True,
             waiting: str | None = None) -> Entry:
        """The journal's next call of the current invocation, which must be
        ``kind`` with ``args`` (compared as JSON values). At the journal's
        end: :class:`JournalEnd` (``waiting`` says what for)."""
        recorded = self.peek()
        if recorded is None:
            shown = _show(kind, args)
            self.over = True
            if self.invocation == "wf":
                raise JournalEnd(waiting or f"the execution had not made {shown} yet")
            raise JournalEnd(waiting or f"its step had not made {shown} yet")
        got = recorded.payload.get("args") if isinstance(recorded.payload, dict) else None
        if recorded.kind != kind or (compare and _normal(got) != _normal(args)):
            self.over = True
            raise Divergence(recorded.seq, _show(recorded.kind, got), _show(kind, args),
                             self.where())
        self.positions[self.invocation] = self.positions.get(self.invocation, 0) + 1
        self.replayed += 1
        return recorded

    def trace(self, entry: Entry, text: str) -> None:
        self.say(f"  #{entry.seq:<5} {entry.invocation:<7} {text}")


def _normal(value: Any) -> Any:
    """``value`` as the engine compares arguments: through JSON."""
    return json.loads(json.dumps(value)) if value is not None else None


#: The replayer of the run in progress (the patched clock asks it).
_REPLAYER: contextvars.ContextVar[Replayer | None] = contextvars.ContextVar(
    "cerebelum_replayer", default=None)


class ReplayRuntime(Runtime):
    """The durable runtime's calls, answered from the journal: the calls
    of workflow code (``wf``) and, within a step, of that step's attempt."""

    def __init__(self, replayer: Replayer, attempt: int = 1):
        self.r = replayer
        self.execution_id = replayer.execution.id
        self._attempt = attempt
        self._approvals: dict[str, int] = {}

    def attempt(self) -> int:
        return self._attempt

    # -- workflow code --------------------------------------------------------

    async def run_stage(self, workflow, steps, envelopes):
        if len(steps) == 1:
            entry = self._take_step("call-step", steps[0], envelopes[0])
            return [await self._step(entry, steps[0], envelopes[0])]
        started = [self._take_step("start-step", s, env) for s, env in zip(steps, envelopes)]
        awaited = self.r.take("await-steps", compare=False)
        self.r.trace(awaited, f"await-steps {', '.join(s.name for s in steps)}")
        return [await self._step(e, s, env) for e, s, env in zip(started, steps, envelopes)]

    def _take_step(self, kind: str, step: Step, env: dict) -> Entry:
        """The journal's call of ``step``; a divergence names the step's
        definition (workflow code's calls are the SDK's, not a line of
        the file)."""
        try:
            entry = self.r.take(kind, {"step": step.name, "input": env, "options": None})
        except Divergence as d:
            if d.where is not None:
                raise
            code = getattr(step.fn, "__code__", None)
            where = None
            if code is not None and self.r.source is not None \
                    and Path(code.co_filename).resolve() == self.r.source:
                where = f"{self.r.source.name}:{code.co_firstlineno} (step {step.name})"
            raise Divergence(d.seq, d.recorded, d.called, where) from None
        self.r.trace(entry, f"{kind} {step.name}")
        return entry

    async def _step(self, call: Entry, step: Step, env: dict) -> dict:
        """Runs the step's recorded attempts again (their calls answered
        from their part of the journal); its recorded result."""
        # An attempt resumed after a hibernation is journaled again: once
        # each, in order.
        attempts = list({a.payload.get("attempt", 1): a
                         for a in self.r.journal.attempts.get(call.seq, [])}.values())
        recorded = self.r.journal.result(call.seq)
        for a in attempts:
            number = a.payload.get("attempt", 1)
            if a.payload.get("queue"):
                self.r.say(f"          step {step.name} attempt {number} ran on worker queue "
                           f"{a.payload['queue']!r}: its recorded outcome stands")
                continue
            invocation = a.payload.get("invocation") or f"{call.seq}.{number}"
            if (call.seq, number) in self.r.journal.failed:
                expected: Any = {"error": self.r.journal.failed[(call.seq, number)]}
            elif recorded is not None and a is attempts[-1]:
                expected = recorded
            else:
                expected = None  # did not end (the engine stopped, or it runs)
            await self._attempt_again(step, env, invocation, number, expected)
        if recorded is None:
            self.r.over = True
            raise JournalEnd(f"step {step.name} had not finished")
        answer = _step_answer(recorded)
        self.r.say(f"          step {step.name} -> {_brief(answer)} (recorded)")
        return answer

    async def _attempt_again(self, step: Step, env: dict, invocation: str, number: int,
                             expected: Any) -> None:
        r = self.r
        r.say(f"          step {step.name} attempt {number} ({invocation}) runs again")
        outer = r.invocation
        r.invocation = invocation
        try:
            text = await invoke_step_json(step, env, ReplayRuntime(r, number), number)
            now: Any = {"ok": json.loads(text)}
        except (JournalEnd, Divergence):
            raise
        except Exception as e:
            if r.over:
                raise
            now = {"error": {"kind": getattr(e, "kind", "exception"),
                             "message": exception_text(e)}}
        finally:
            r.invocation = outer
        if expected is not None and not _same_outcome(expected, now):
            what = (f"recorded {json.dumps(expected)[:200]}, here {json.dumps(now)[:200]}")
            r.differences.append((step.name, what))
            r.say(f"          step {step.name} attempt {number} ended differently: {what}")

    def _answered(self, entry: Entry, why: str, shown: str) -> Any:
        """The recorded answer of the waiting call ``entry`` (its ``ok``
        value), traced as ``shown -> answer``; at the journal's end
        :class:`JournalEnd` (``why``); a recorded error raised as
        :class:`StepError`."""
        answer = self.r.journal.result(entry.seq)
        if answer is None:
            self.r.over = True
            raise JournalEnd(why)
        value = _parsed(answer["ok"]) if "ok" in answer else answer
        self.r.trace(entry, f"{shown} -> {_brief(value)}")
        if "error" in answer:
            err = answer["error"]
            raise StepError(err.get("message", ""), err.get("kind", ""))
        return value

    async def engine_poll(self, ctx, check, interval_ms, max_attempts, timeout_ms):
        env = {"workflow": ctx.workflow_name, "inputs": ctx.inputs, "poll": True,
               "deps": {d: ctx._deps.get(d) for d in check.dependencies}}
        options = {"interval_ms": interval_ms, "max_attempts": max_attempts,
                   "timeout_ms": timeout_ms}
        entry = self.r.take("poll", {"check_step": check.name, "input": env,
                                     "options": options})
        try:
            result = self._answered(entry, f"its poll of {check.name} had not ended",
                                    f"poll {check.name}")
        except StepError as e:
            if e.kind in ("poll-exhausted", "poll-timeout"):
                raise PollTimeoutError(str(e), e.kind) from None
            raise
        if isinstance(result, dict) and "error" in result:
            raise StepError(f"poll check `{check.name}` failed: {result['error']}")
        return result.get("ok") if isinstance(result, dict) else result

    async def patched(self, patch_id):
        # As the engine answers: true where the journal has this patch here
        # (or the journal ends: new code's path), false where it holds
        # another call.
        recorded = self.r.peek()
        if recorded is not None and (recorded.kind != "patched"
                                     or recorded.payload.get("args") != {"id": patch_id}):
            self.r.say(f"          patched({patch_id!r}) -> false (recorded before the patch)")
            return False
        entry = self.r.take("patched", {"id": patch_id})
        self.r.trace(entry, f"patched {patch_id!r} -> true")
        return True

    async def recorded(self, name, compute, what=None):
        # As the engine's recall: the value is the journal's when the
        # record is the next call; else `compute` runs again (its own
        # calls, recorded before the value, are answered in turn).
        recorded = self.r.peek()
        if recorded is None or recorded.kind != "record" \
                or recorded.payload.get("args") != {"name": name}:
            value = await compute()
            entry = self.r.take("record", {"name": name})
            self.r.trace(entry, f"record {name} = {_brief(entry.payload.get('answer'))}")
            return value
        entry = self.r.take("record", {"name": name})
        self.r.trace(entry, f"record {name} = {_brief(entry.payload.get('answer'))} "
                            "(recalled)")
        return entry.payload.get("answer")

    async def approval(self, ctx, approval_type, data, timeout_ms):
        n = self._approvals.get(approval_type, 0) + 1
        self._approvals[approval_type] = n
        key = approval_type if n == 1 else f"{approval_type}-{n}"
        entry = self.r.take("await-approval", {
            "key": key, "message": f"step {ctx.step_name} waits for approval {key!r}",
            "details": None if data is None else json.loads(to_json(data, "the details")),
            "timeout_ms": timeout_ms}, waiting=f"it waits for approval {key!r}")
        value = self._answered(entry, f"it waits for approval {key!r}", f"approval {key!r}")
        if isinstance(value, dict) and "approved" in value:
            approved = value["approved"]
            return {} if approved is None else approved
        if isinstance(value, dict) and "rejected" in value:
            raise ApprovalRejectedError(value["rejected"])
        raise ApprovalTimeoutError(f"approval {key!r} timed out after {timeout_ms} ms")

    async def child(self, ctx, workflow, inputs):
        started = self.r.take("start-child", {"workflow": workflow, "input": inputs,
                                               "options": None})
        self.r.trace(started, f"start-child {workflow}")
        awaited = self.r.take("await-child", compare=False,
                              waiting=f"it waits for child {workflow}")
        output = self._answered(awaited, f"it waits for child {workflow}",
                                f"await-child {workflow}")
        inner = output.get("output") if isinstance(output, dict) else None
        return {"output": value_of(inner),
                "steps": output.get("steps", {}) if isinstance(output, dict) else {}}

    async def signal(self, ctx, name, timeout_ms):
        entry = self.r.take("await-signal", {"name": name, "timeout_ms": timeout_ms},
                            waiting=f"it waits for signal {name!r}")
        value = self._answered(entry, f"it waits for signal {name!r}", f"signal {name!r}")
        if isinstance(value, dict) and "signal" in value:
            return value["signal"]
        raise SignalTimeoutError(f"no signal {name!r} came within {timeout_ms} ms")

    def set_state(self, ctx, state):
        entry = self.r.take("set-state", {"state": json.loads(to_json(state, "the state"))})
        self.r.trace(entry, f"set-state {_brief(state)}")

    def progress(self, ctx, percent, message):
        entry = self.r.take("report-progress", {"percent": percent, "message": message})
        self.r.trace(entry, "report-progress")
        print_progress(ctx.step_name, percent, message)

    def secret(self, ctx, name):
        env = "CEREBELUM_SECRET_" + "".join(c if c.isalnum() else "_" for c in name).upper()
        return os.environ.get(env, "[redacted]")

    def http(self, method, url, headers, body):
        entry = self.r.take("http", compare=False)
        args = entry.payload.get("args", {})
        if args.get("method") != method or args.get("url") != url:
            raise Divergence(entry.seq, _show("http", args),
                             _show("http", {"method": method, "url": url}), self.r.where())
        answer = entry.payload.get("answer", {})
        self.r.trace(entry, f"http {method} {url} -> {answer.get('status', answer.get('error'))}")
        if "error" in answer:
            raise HttpError(f"{method} {url} failed: {answer['error']}")
        raw = answer.get("body", "")
        body_bytes = bytes.fromhex(raw) if answer.get("encoding") == "hex" else raw.encode()
        return answer["status"], [tuple(h) for h in answer.get("headers", [])], body_bytes

    def now_ns(self) -> int:
        entry = self.r.take("now-ms", {})
        self.r.trace(entry, f"now-ms -> {entry.payload.get('answer')}")
        return int(entry.payload.get("answer", 0)) * 1_000_000


def _parsed(value: Any) -> Any:
    """A recorded answer: some are stored as JSON text."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _step_answer(recorded: Any) -> dict:
    """What ``call-step`` gave workflow code: the step's result, or
    ``{"error": message}``."""
    if "error" in recorded:
        err = recorded["error"]
        return {"error": err.get("message", "") if isinstance(err, dict) else str(err)}
    value = _parsed(recorded.get("ok"))
    return value if isinstance(value, dict) else {"ok": value}


def _same_outcome(recorded: Any, now: Any) -> bool:
    if "error" in recorded or "error" in now:
        return ("error" in recorded) == ("error" in now)
    return _normal(_step_answer(recorded)) == _normal(_parsed(now["ok"]))


def _brief(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ------------------------------------------------------------------ running


def replay_journal(execution: Execution, entries: list[Entry], source: Path | None = None,
                   out: TextIO | None = sys.stdout) -> Report:
    """Replays ``execution`` (its workflow must be defined: import the
    file first) against ``entries``, its journal; what it found. The
    journal is printed on ``out`` as the code consumes it (None: quiet)."""
    wf = WORKFLOWS.get(execution.workflow)
    if wf is None:
        raise CerebelumError(
            f"execution {execution.id} runs workflow {execution.workflow!r}, which the file "
            f"does not define (it defines: {workflow_names() or 'none'})")
    journal = Journal(entries)
    replayer = Replayer(journal, execution, source, out)
    report = Report(execution, calls=sum(len(c) for inv, c in journal.calls.items()
                                         if inv == "wf" or _is_step(inv)),
                    differences=replayer.differences)
    runtime = ReplayRuntime(replayer)

    def sleep_ms(ms: int) -> None:
        entry = replayer.take("sleep", {"duration_ms": ms}, waiting=f"it sleeps {ms} ms")
        replayer.trace(entry, f"sleep {ms} ms (returns at once)")

    loop = DurableLoop(sleep_ms)
    _patches.install(_clock)
    token = _REPLAYER.set(replayer)
    replayer.say(f"replaying execution {execution.id} ({execution.workflow}, "
                 f"{len(journal.entries)} journal entries)")
    try:
        outcome = loop.run_until_complete(run_workflow(wf, execution.inputs, runtime))
        report.status = "completed" if outcome.status in ("completed", "continued") \
            else "failed"
    except Divergence as d:
        report.divergence = d
    except JournalEnd as e:
        report.ended = e.why
    finally:
        # Stopped by the loop (a sleep): the workflow's task still waits;
        # it unwinds here, in its own context.
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        _REPLAYER.reset(token)
        loop.close()
    report.replayed = replayer.replayed
    replayer.say(report.summary())
    return report


def _is_step(invocation: str) -> bool:
    head, _, tail = invocation.partition(".")
    return head.isdigit() and tail.isdigit()


def _clock() -> int | None:
    """The patched clock: a step's journaled reads; workflow code's is the
    execution's start, as in the sandbox."""
    replayer = _REPLAYER.get()
    if replayer is None:
        return None
    if replayer.invocation == "wf":
        return replayer.execution.created_at_ms * 1_000_000
    return ReplayRuntime(replayer).now_ns()


async def fetch(execution_id: str, server: str | None = None, api_key: str | None = None,
                ca_cert: str | None = None) -> tuple[Execution, list[Entry]]:
    """The execution and its journal, from the server."""
    from .client import Client, status_name
    from .v1 import cerebelum_pb2 as pb

    client = Client(server, api_key, ca_cert=ca_cert)
    try:
        found = await client.call("GetExecution", pb.GetExecutionRequest(id=execution_id))
        journal = await client.call("GetJournal", pb.GetJournalRequest(id=execution_id))
    finally:
        await client.close()
    execution = Execution(id=found.id, workflow=found.workflow,
                          inputs=json.loads(found.input_json or "null"),
                          created_at_ms=found.created_at_ms,
                          status=status_name(found.status), package=found.package,
                          version=found.package_version)
    return execution, [Entry.from_pb(e) for e in journal.entries]


def replay(execution_id: str, source: str | Path, server: str | None = None,
           api_key: str | None = None, ca_cert: str | None = None,
           out: TextIO | None = sys.stdout) -> Report:
    """Fetches execution ``execution_id`` and its journal from the server
    and replays the workflow of the Python file ``source`` against it."""
    from . import build
    source = Path(source)
    if not source.is_file():
        raise CerebelumError(f"{source}: no such file")
    execution, entries = asyncio.run(fetch(execution_id, server, api_key, ca_cert))
    _patches.install(_clock)  # before the file: its `from datetime import datetime`
    build.import_checked(source.resolve(), CerebelumError)
    return replay_journal(execution, entries, source, out)

