"""The SDK's types, as a user's type checker sees them: ``mypy --strict``
and ``pyright`` (its default, standard mode) check the Python examples of
the README and docs (the blocks marked ``python run`` or ``python
file=PATH``, found as ``tests/docs.rs`` finds them), every ``.py`` of
``examples/``, and :data:`EXPECTATIONS` (what the decorators return,
``await wf.execute(...)`` an :class:`ExecutionResult`, and what must be
refused), against the SDK installed as ``pip install ./guest-sdk/python``
installs it (not the source tree: its ``py.typed`` must be there)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from test_install import SDK, fresh_checkout, fresh_venv

ROOT = SDK.parents[1]

#: Files whose own annotations are not yet ``--strict``: ``inputs: dict``
#: (type-arg: ``dict[str, Any]``) and an unannotated workflow body ``def
#: deploy(wf):`` (no-untyped-def: ``wf: WorkflowBuilder) -> None``), which
#: ``--strict`` refuses whatever the SDK's types are. Every other error
#: fails them as it fails the rest; once one is clean, a test says to take
#: it off this list. A new file is strict.
NOT_YET_STRICT: set[str] = set()
ALLOWED_THERE = {"type-arg", "no-untyped-def", "no-untyped-call"}

#: Typed use of the SDK: ``assert_type`` states what the checkers must
#: infer; a line that must be refused carries ``# type: ignore[code]``,
#: which both checkers report as unused when nothing is refused there.
EXPECTATIONS = '''
from typing import Any

from typing_extensions import assert_type

from cerebelum import (Context, ExecutionResult, Step, StepComposition, Workflow,
                       WorkflowBuilder, poll, retry, sleep, step, wait_for_approval,
                       wait_for_signal, workflow)


@step
async def fetch(context: Context, inputs: dict[str, Any]) -> int:
    await sleep(10)
    return len(inputs)


@step(retry=3, timeout_ms=1000)
async def double(context: Context, fetch: int) -> int:
    return fetch * 2


@workflow
def pipeline(wf: WorkflowBuilder) -> None:
    wf.timeline(fetch >> double)


@workflow(name="other")
def other(wf: WorkflowBuilder) -> None:
    wf.timeline([fetch, double])
    wf.diverge(fetch, {"error": double, "timeout": "retry"})
    wf.branch(after=double, condition=lambda r: r["ok"] > 1, when_false="fail")


def address() -> str:
    return "10.0.0.1"


async def address_soon() -> str:
    return "10.0.0.1"


def one_parameter(kind: str) -> bool:
    return True


async def main(context: Context) -> None:
    # (assert_type would compare the parameters' names too)
    fetch_type: Step[[Context, dict[str, Any]], int] = fetch
    double_type: Step[[Context, int], int] = double
    wrong_type: Step[[Context, int], str] = double  # type: ignore[assignment]
    assert_type(pipeline, Workflow)
    assert_type(other, Workflow)
    assert_type(await pipeline.execute({"n": 1}), ExecutionResult)
    result = await other.execute(approval_handler=lambda kind, data: True,
                                 signal_handler=lambda name: {}, secrets={"k": "v"})
    assert_type(result.ok, bool)
    assert_type(result.steps, dict[str, Any])
    assert_type(await fetch(context, {}), int)
    assert_type(fetch >> [double, other] >> double, StepComposition)
    assert_type([fetch, double] >> other, StepComposition)
    assert_type(await poll(address, interval=10), str)
    assert_type(await poll(address_soon, success_condition=lambda ip: ip != ""), str)
    assert_type(await poll(double, max_attempts=3), int)
    assert_type(await retry(address, max_attempts=2), str)
    assert_type(await retry(address_soon, delay=10), str)
    assert_type(await context.child(pipeline, {}), dict[str, Any])
    assert_type(await wait_for_approval("ok"), Any)
    assert_type(await wait_for_signal("go", timeout_ms=5), Any)
    count: int = await pipeline.execute()  # type: ignore[assignment]
    await fetch(context)  # type: ignore[call-arg]
    fetch >> address  # type: ignore[operator]
    await pipeline.execute(approval_handler=one_parameter)  # type: ignore[arg-type]


@step  # type: ignore[arg-type]
def not_async(context: Context) -> int:
    return 1


@workflow  # type: ignore[arg-type]
def two_parameters(wf: WorkflowBuilder, more: int) -> None:
    pass
'''


@dataclass
class Source:
    #: Where it comes from: ``PAGE:LINE`` or a path in the repository.
    origin: str
    code: str

    @property
    def path(self) -> str:
        """The file it is in."""
        return self.origin.partition(":")[0]

    @property
    def file_name(self) -> str:
        """A module name of its own in the directory the checkers read."""
        return re.sub(r"\W", "_", self.origin.lower()).strip("_") + ".py"


def blocks(markdown: str) -> list[tuple[int, list[str], str]]:
    """The fenced blocks of ``markdown`` as ``tests/docs.rs`` reads them:
    (line of the opening fence, words after ``` , body); an indented
    fence has its indentation taken off its lines."""
    found = []
    lines = iter(enumerate(markdown.splitlines(), 1))
    for n, line in lines:
        indent = len(line) - len(line.lstrip())
        if not line.lstrip().startswith("```"):
            continue
        words = line.lstrip()[3:].split()
        body = []
        for _, inner in lines:
            if inner.strip() == "```":
                break
            cut = len(inner) - len(inner.lstrip())
            body.append(inner[min(cut, indent):] + "\n")
        else:
            raise AssertionError(f"the block at line {n} is never closed")
        found.append((n, words, "".join(body)))
    return found


def sources() -> list[Source]:
    """The README's and docs' Python blocks that run (or are written for
    a block that runs), and the examples' Python files."""
    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for line, words, body in blocks(page.read_text()):
            marked = any(w == "run" or w.startswith("file=") for w in words[1:])
            if words[:1] == ["python"] and marked:
                found.append(Source(f"{page.relative_to(ROOT)}:{line}", body))
    for path in sorted((ROOT / "examples").rglob("*.py")):
        found.append(Source(str(path.relative_to(ROOT)), path.read_text()))
    return found


SOURCES = [*sources(), Source("expectations", EXPECTATIONS)]


def test_the_sources_are_found():
    origins = [s.origin for s in SOURCES]
    assert any(o.startswith("README.md:") for o in origins), origins
    assert any(o.startswith("docs/python.md:") for o in origins), origins
    assert any(o.startswith("examples/python/") for o in origins), origins
    assert len({s.file_name for s in SOURCES}) == len(SOURCES)


@dataclass
class Checked:
    #: Per file name: the lines of mypy's output about it.
    mypy: dict[str, list[str]]
    #: Per file name: pyright's errors (``LINE: message (rule)``).
    pyright: dict[str, list[str]]
    mypy_output: str
    pyright_output: str


@pytest.fixture(scope="module")
def checked(tmp_path_factory) -> Checked:
    """Installs the SDK, as a user's ``pip install`` does, into a fresh
    environment, writes every source into one directory, and runs both
    checkers over it once."""
    for tool in ("mypy", "pyright"):
        if subprocess.run([sys.executable, "-c", f"import {tool}"]).returncode != 0:
            pytest.fail(f"{tool} is not installed in {sys.executable}'s environment: "
                        "run scripts/python-env.sh")
    tmp = tmp_path_factory.mktemp("types")
    sdk = fresh_checkout(tmp / "clone")
    python = fresh_venv(tmp / "venv")
    site = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True).stdout.strip())
    # This environment's pip and setuptools build and install it (offline).
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--no-build-isolation", "--no-index", "--target", str(site), str(sdk)],
        cwd=tmp, capture_output=True, text=True)
    assert install.returncode == 0, install.stdout + install.stderr
    assert (site / "cerebelum" / "py.typed").is_file(), "the installed SDK has no py.typed"

    work = tmp / "check"
    work.mkdir()
    for source in SOURCES:
        (work / source.file_name).write_text(source.code)
    files = sorted(s.file_name for s in SOURCES)
    mypy = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--python-executable", str(python),
         "--cache-dir", str(tmp / "mypy-cache"), "--no-color-output", *files],
        cwd=work, capture_output=True, text=True, timeout=600)
    assert mypy.returncode in (0, 1), mypy.stdout + mypy.stderr
    by_file: dict[str, list[str]] = {}
    for line in mypy.stdout.splitlines():
        by_file.setdefault(line.partition(":")[0], []).append(line)

    (work / "pyrightconfig.json").write_text(json.dumps({
        "typeCheckingMode": "standard",
        "reportUnnecessaryTypeIgnoreComment": "error",
    }))
    pyright = subprocess.run(
        [sys.executable, "-m", "pyright", "--outputjson", "--pythonpath", str(python), *files],
        cwd=work, capture_output=True, text=True, timeout=600)
    try:
        report = json.loads(pyright.stdout)
    except ValueError:
        raise AssertionError(f"pyright did not run:\n{pyright.stdout}{pyright.stderr}") from None
    errors: dict[str, list[str]] = {}
    for d in report["generalDiagnostics"]:
        if d["severity"] == "error":
            errors.setdefault(Path(d["file"]).name, []).append(
                f"{d['range']['start']['line'] + 1}: {d['message']} ({d.get('rule', '-')})")
    return Checked(by_file, errors, mypy.stdout + mypy.stderr,
                   json.dumps(report["generalDiagnostics"], indent=1))


def numbered(code: str) -> str:
    return "".join(f"{n:4} {line}" for n, line in enumerate(code.splitlines(True), 1))


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.origin)
def test_mypy_strict_accepts(checked, source):
    errors = mypy_errors(checked, source)
    if source.path in NOT_YET_STRICT:
        errors = [e for e in errors if not e.endswith(tuple(f"[{c}]" for c in ALLOWED_THERE))]
    assert not errors, (f"mypy --strict refuses {source.origin} (written as "
                        f"{source.file_name}):\n{numbered(source.code)}\n--- mypy:\n"
                        + "\n".join(errors) + f"\n--- whole output:\n{checked.mypy_output}")


def test_not_yet_strict_lists_only_files_that_are_not(checked):
    for path in sorted(NOT_YET_STRICT):
        of_it = [s for s in SOURCES if s.path == path]
        assert of_it, f"NOT_YET_STRICT names {path}, which has no Python example"
        assert any(mypy_errors(checked, s) for s in of_it), (
            f"{path} is clean under mypy --strict now: take it off NOT_YET_STRICT in "
            "tests/test_types.py")


def mypy_errors(checked: Checked, source: Source) -> list[str]:
    return [e for e in checked.mypy.get(source.file_name, []) if ": error:" in e]


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.origin)
def test_pyright_accepts(checked, source):
    errors = checked.pyright.get(source.file_name, [])
    assert not errors, (f"pyright refuses {source.origin} (written as {source.file_name}):\n"
                        f"{numbered(source.code)}\n--- pyright:\n" + "\n".join(errors))
