"""The errors of training: ``TrainingError`` (a run that cannot run, reported before anything
is written) and ``DivergenceError`` (the loss or the weights became non-finite)."""

from __future__ import annotations


class TrainingError(ValueError):
    """A training configuration that cannot run (reported before anything is written)."""


class DivergenceError(TrainingError):
    """The loss or the weights became non-finite at ``step``; the run stopped there."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step
