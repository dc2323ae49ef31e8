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


class StepRegistry:
    """The steps of this process by name, under the original SDK's public
    lookup: ``StepRegistry.get("fetch_user")``, ``StepRegistry.all()``.
    The same registry as :data:`STEPS` (what ``@step`` fills)."""

    _steps = STEPS

    @classmethod
    def register(cls, step: Any) -> None:
        """Adds ``step`` (what ``@step`` returns) under its name, replacing
        one of that name. ``@step`` registers its steps itself."""
        STEPS[step.name] = step

    @classmethod
    def get(cls, name: str) -> Any | None:
        """The step named ``name``, or ``None``."""
        return STEPS.get(name)

    @classmethod
    def all(cls) -> dict[str, Any]:
        """Every step by name (a copy)."""
        return dict(STEPS)

    @classmethod
    def clear(cls) -> None:
        """Forgets every step (for tests)."""
        STEPS.clear()


class WorkflowRegistry:
    """The workflows of this process by name, under the original SDK's
    public lookup: ``WorkflowRegistry.get("deploy")``. The same registry as
    :data:`WORKFLOWS` (what ``@workflow`` fills)."""

    _workflows = WORKFLOWS

    @classmethod
    def register(cls, workflow: Any) -> None:
        """Adds ``workflow`` under its name, replacing one of that name.
        ``@workflow`` registers its workflows itself."""
        WORKFLOWS[workflow.name] = workflow

    @classmethod
    def get(cls, name: str) -> Any | None:
        """The workflow named ``name``, or ``None``."""
        return WORKFLOWS.get(name)

    @classmethod
    def all(cls) -> dict[str, Any]:
        """Every workflow by name (a copy)."""
        return dict(WORKFLOWS)

    @classmethod
    def clear(cls) -> None:
        """Forgets every workflow (for tests)."""
        WORKFLOWS.clear()
