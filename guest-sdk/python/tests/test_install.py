"""The README's install commands, from a fresh clone into a fresh virtual
environment: ``pip install ./guest-sdk/python`` installs the SDK and
nothing else, and local mode runs a workflow; a plain (non-editable)
``pip install "guest-sdk/python[build]"`` gives a working ``cerebelum
build``: the installed package carries everything componentize-py needs
(the WIT contract and its ``wit/deps``), not only what the source tree
has. (``tests/install.rs`` installs the ``cerebelum`` binary.)"""

import shutil
import subprocess
import sys
from pathlib import Path

SDK = Path(__file__).resolve().parents[1]
HELLO = '''import asyncio

from cerebelum import Context, step, workflow


@step
async def greet(context: Context, name: str) -> dict:
    return {"greeting": f"hello {name}"}


@workflow
def hello(wf):
    wf.timeline(greet)
'''


def fresh_checkout(into: Path) -> Path:
    """The SDK as a fresh clone has it: without the egg-info and build
    folders an install here leaves (they would hide missing package data);
    ``cerebelum/wit`` is a symlink to the repository's ``wit``."""
    sdk = into / "guest-sdk" / "python"
    shutil.copytree(SDK, sdk, symlinks=True, ignore=shutil.ignore_patterns(
        "*.egg-info", "build", "__pycache__", ".pytest_cache"))
    shutil.copytree(SDK.parents[1] / "wit", into / "wit")
    return sdk


def fresh_venv(at: Path) -> Path:
    """A new virtual environment; its Python."""
    subprocess.run([sys.executable, "-m", "venv", str(at)], check=True)
    return at / "bin" / "python"


def test_the_readmes_pip_install_runs_a_workflow_locally(tmp_path):
    clone = tmp_path / "clone"
    fresh_checkout(clone)
    python = fresh_venv(tmp_path / "venv")
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "./guest-sdk/python"],
                             cwd=clone, capture_output=True, text=True)
    assert install.returncode == 0, install.stdout + install.stderr
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"],
                            capture_output=True, text=True, check=True)
    installed = {line.split("==")[0].lower() for line in listed.stdout.split()}
    assert installed - {"pip", "setuptools", "wheel"} == {"cerebelum"}, "no dependencies"
    source = tmp_path / "hello.py"
    source.write_text(HELLO + 'print(asyncio.run(hello.execute({"name": "web-1"})).output)\n')
    ran = subprocess.run([str(python), str(source)], cwd=tmp_path, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "{'ok': {'greeting': 'hello web-1'}}\n"


def test_a_plain_pip_install_builds_a_package(tmp_path):
    sdk = fresh_checkout(tmp_path / "clone")
    venv = tmp_path / "venv"
    python = fresh_venv(venv)
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", f"{sdk}[build]"],
                             cwd=tmp_path, capture_output=True, text=True)
    assert install.returncode == 0, install.stdout + install.stderr
    # setuptools leaves build/ in the tree: /.gitignore ignores it.
    where = subprocess.run([str(python), "-c", "import cerebelum; print(cerebelum.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, check=True)
    assert str(venv) in where.stdout, "the installed copy, not the source tree"
    source = tmp_path / "01_hello.py"  # not a module name: build takes it
    source.write_text(HELLO)
    out = tmp_path / "hello.wasm"
    built = subprocess.run([str(python), "-m", "cerebelum", "build", str(source), "-o", str(out)],
                           cwd=tmp_path, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    assert out.stat().st_size > 1_000_000
    assert "workflows hello" in built.stderr
