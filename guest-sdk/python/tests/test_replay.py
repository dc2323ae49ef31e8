"""``python -m cerebelum replay``'s replayer (cerebelum/replay.py) on
journals written as the engine writes them (their shape copied from a
real execution's `cerebelum journal`); tests/replay.rs replays real ones
fetched from a real server."""

import io
import sys
import textwrap

import pytest

from cerebelum import build
from cerebelum.errors import CerebelumError
from cerebelum.replay import Entry, Execution, replay_journal

APP = '''
import time
from cerebelum import Context, patched, sleep, step, wait_for_approval, workflow
from cerebelum._helpers import _runtime

RAN = []

@step
async def stamp(context: Context, inputs: dict) -> dict:
    RAN.append("stamp")
    now = time.time()
    print(f"stamp read the clock: {now}")
    return {"now": now}

@step
async def nap(context: Context, inputs: dict) -> dict:
    await sleep(inputs["sleep_ms"])
    return {"slept": inputs["sleep_ms"]}

@step
async def ask(context: Context, inputs: dict) -> dict:
    decision = await wait_for_approval("go", {"why": "to finish"})
    return {"decision": decision}

@workflow
def app(wf):
    wf.timeline(stamp >> nap >> ask)
'''

ENV = {"workflow": "app", "inputs": {"sleep_ms": 40}, "deps": {}}


def load(tmp_path, source: str, name: str):
    """Imports ``source`` as file ``name`` (a name no other test uses:
    modules stay imported); its path."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    build.import_checked(path, CerebelumError)
    return path


def module(path):
    return sys.modules[build.module_name(path)]


def call(seq, kind, args, invocation="wf", **rest):
    return Entry(seq, invocation, kind, {"args": args, **rest})


def event(seq, kind, ref, payload, invocation="wf"):
    return Entry(seq, invocation, kind, payload, ref)


def step_call(seq, name, env=ENV):
    return call(seq, "call-step", {"step": name, "input": env, "options": None})


def journal(sleep_ms=40, approved=True):
    """The journal of `app` with input {"sleep_ms": 40}, approved by ann
    (as the engine wrote one)."""
    entries = [
        Entry(1, "engine", "started", {"workflow": "app"}),
        step_call(2, "stamp"),
        event(3, "attempt", 2, {"step": "stamp", "attempt": 1}),
        call(4, "now-ms", {}, "2.1", answer=1795744687654),
        Entry(5, "2.1", "output", {"stream": "stdout", "text": "x\n", "bytes": 2}),
        event(6, "result", 2, {"ok": {"ok": {"now": 1795744687.654}}}),
        step_call(7, "nap"),
        event(8, "attempt", 7, {"step": "nap", "attempt": 1}),
        call(9, "sleep", {"duration_ms": sleep_ms}, "7.1", due_at=1795744687704),
        event(10, "result", 9, {"ok": None}, "7.1"),
        event(11, "result", 7, {"ok": {"ok": {"slept": sleep_ms}}}),
        step_call(12, "ask"),
        event(13, "attempt", 12, {"step": "ask", "attempt": 1}),
        call(14, "await-approval", {"key": "go", "message": "step ask waits for approval 'go'",
                                    "details": {"why": "to finish"}, "timeout_ms": None},
             "12.1", due_at=None),
    ]
    if approved:
        entries += [
            # Resumed after its hibernation: the attempt journaled again.
            event(15, "attempt", 12, {"step": "ask", "attempt": 1}),
            event(16, "result", 14, {"ok": {"approved": {"by": "ann"}}}, "12.1"),
            event(17, "result", 12, {"ok": {"ok": {"decision": {"by": "ann"}}}}),
        ]
    return entries


def execution(status="completed"):
    return Execution("ex_1", "app", {"sleep_ms": 40}, 1795744687000, status, "app", 1)


def test_every_call_is_answered_from_the_journal_and_printed(tmp_path, capsys):
    source = load(tmp_path, APP, "replay_all.py")
    out = io.StringIO()
    report = replay_journal(execution(), journal(), source, out)
    assert report.compatible and report.status == "completed", out.getvalue()
    assert (report.replayed, report.calls) == (6, 6)
    assert report.differences == []
    # The step read the clock its first run read, and printed it.
    assert "stamp read the clock: 1795744687.654" in capsys.readouterr().out
    trace = out.getvalue()
    for line in ["#2     wf      call-step stamp", "#4     2.1     now-ms -> 1795744687654",
                 "#9     7.1     sleep 40 ms (returns at once)",
                 "approval 'go' -> {\"approved\": {\"by\": \"ann\"}}",
                 "step ask attempt 1 (12.1) runs again",
                 "replayed through call 6 of 6: the workflow completed, as it did"]:
        assert line in trace, trace
    # Each attempt once, though journaled twice.
    assert trace.count("step ask attempt 1") == 1


def test_changed_code_diverges_at_the_entry_and_the_line_of_the_file(tmp_path):
    changed = APP.replace('    await sleep(inputs["sleep_ms"])\n',
                          '    await sleep(inputs["sleep_ms"] // 2)\n'
                          '    await sleep(inputs["sleep_ms"] // 2)\n')
    source = load(tmp_path, changed, "replay_changed.py")
    line = changed.splitlines().index('    await sleep(inputs["sleep_ms"] // 2)') + 1
    report = replay_journal(execution(), journal(), source, None)
    d = report.divergence
    assert d is not None and d.seq == 9
    assert (d.recorded, d.called) == ("sleep(40 ms)", "sleep(20 ms)")
    assert d.where == f"replay_changed.py:{line} in nap", d
    assert report.differences == []  # the unwinding is not an outcome

    # A step renamed in the timeline: the step's definition is the line.
    renamed = APP.replace("stamp >> nap >> ask", "stamp >> ask >> nap")
    source = load(tmp_path, renamed, "replay_renamed.py")
    d = replay_journal(execution(), journal(), source, None).divergence
    assert d is not None and d.seq == 7
    assert d.recorded.startswith("call-step('nap'") and d.called.startswith("call-step('ask'")
    line = renamed.splitlines().index("async def ask(context: Context, inputs: dict) -> dict:")
    assert d.where == f"replay_renamed.py:{line} (step ask)", d


def test_a_journal_that_ends_in_a_wait_stops_there(tmp_path):
    source = load(tmp_path, APP, "replay_ends.py")
    report = replay_journal(execution("waiting"), journal(approved=False), source, None)
    assert report.compatible and report.ended == "it waits for approval 'go'"
    report = replay_journal(execution("waiting"), journal()[:10], source, None)
    assert report.ended == "step nap had not finished"


def test_failed_attempts_run_again_and_a_step_on_a_worker_does_not(tmp_path):
    source = load(tmp_path, '''
        from cerebelum import Context, step, workflow

        RAN = []

        @step(retry=2)
        async def flaky(context: Context, inputs: dict) -> dict:
            RAN.append(context.attempt)
            if context.attempt == 1:
                raise ConnectionError("down")
            return {"attempt": context.attempt}

        @step(worker="gpu")
        async def native(context: Context, inputs: dict) -> dict:
            RAN.append("native")
            return {"native": True}

        @workflow
        def app(wf):
            wf.timeline(flaky >> native)
    ''', "replay_attempts.py")
    entries = [
        step_call(1, "flaky"),
        event(2, "attempt", 1, {"step": "flaky", "attempt": 1}),
        event(3, "attempt-failed", 1, {"step": "flaky", "attempt": 1, "retry_at": 5,
                                       "error": {"kind": "exception", "message": "down"}}),
        event(4, "attempt", 1, {"step": "flaky", "attempt": 2}),
        event(5, "result", 1, {"ok": {"ok": {"attempt": 2}}}),
        step_call(6, "native", {**ENV, "deps": {}}),
        event(7, "attempt", 6, {"step": "native", "attempt": 1, "queue": "gpu"}),
        event(8, "result", 6, {"ok": {"ok": {"native": "recorded"}}}),
    ]
    out = io.StringIO()
    report = replay_journal(execution(), entries, source, out)
    assert report.compatible and report.status == "completed", out.getvalue()
    assert module(source).RAN == [1, 2], "both attempts ran again, the worker's step did not"
    assert report.differences == []
    assert "ran on worker queue 'gpu': its recorded outcome stands" in out.getvalue()


def test_patched_and_recorded_values_follow_the_journal(tmp_path):
    source = load(tmp_path, '''
        from cerebelum import Context, patched, retry, sleep, step, workflow

        CALLS = []

        def fetch():
            CALLS.append(1)
            return 7

        @step
        async def work(context: Context, inputs: dict) -> dict:
            n = await retry(fetch)
            if await patched("extra"):
                await sleep(5)
            await sleep(10)
            return {"n": n}

        @workflow
        def app(wf):
            wf.timeline(work)
    ''', "replay_patched.py")
    before_patch = [
        step_call(1, "work"),
        event(2, "attempt", 1, {"step": "work", "attempt": 1}),
        call(3, "record", {"name": "retry-attempt"}, "1.1", answer={"ok": 7}),
        call(4, "sleep", {"duration_ms": 10}, "1.1", due_at=0),
        event(5, "result", 1, {"ok": {"ok": {"n": 7}}}),
    ]
    report = replay_journal(execution(), before_patch, source, None)
    assert report.compatible and report.status == "completed"
    assert module(source).CALLS == [], "a recorded value is recalled, not computed again"
    with_patch = before_patch[:3] + [
        call(4, "patched", {"id": "extra"}, "1.1", answer=True),
        call(5, "sleep", {"duration_ms": 5}, "1.1", due_at=0),
        call(6, "sleep", {"duration_ms": 10}, "1.1", due_at=0),
        event(7, "result", 1, {"ok": {"ok": {"n": 7}}}),
    ]
    out = io.StringIO()
    report = replay_journal(execution(), with_patch, source, out)
    assert report.compatible and report.replayed == 5, out.getvalue()
    assert "patched 'extra' -> true" in out.getvalue()


def test_a_workflow_the_file_lacks_is_a_clear_error(tmp_path):
    source = load(tmp_path, APP, "replay_lacks.py")
    other = Execution("ex_2", "billing", {}, 0)
    with pytest.raises(CerebelumError, match="runs workflow 'billing', which the file does "
                                             "not define \\(it defines: app\\)"):
        replay_journal(other, [], source, None)
