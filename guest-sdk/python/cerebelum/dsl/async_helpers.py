"""The original SDK's ``cerebelum.dsl.async_helpers``: ``sleep``, ``poll``,
``retry`` (and ``ProgressReporter``, ``wait_for_approval``), the same
functions as ``from cerebelum import sleep, poll, retry``."""

from .._helpers import ProgressReporter, poll, retry, sleep, wait_for_approval

__all__ = ["sleep", "poll", "retry", "wait_for_approval", "ProgressReporter"]
