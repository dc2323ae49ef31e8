"""Every step and workflow defined in this process, by name: what a package
built from this code exports, what a worker serves, what a child workflow's
name refers to.

A leaf: it imports nothing of the SDK, so every module may read it (the
DSL fills it as ``@step`` and ``@workflow`` run)."""

from __future__ import annotations

from typing import Any

#: ``cerebelum._dsl.Step`` by name.
STEPS: dict[str, Any] = {}
#: ``cerebelum._dsl.WorkflowDefinition`` (the public ``Workflow``) by name.
WORKFLOWS: dict[str, Any] = {}


def workflow_names() -> str:
    """The names of the workflows defined, for an error message."""
    return ", ".join(sorted(WORKFLOWS)) or "none"
