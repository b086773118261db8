"""Errors of the model manager: each message tells the user what to do next."""

from __future__ import annotations

from collections.abc import Sequence


def download_command(model_ids: Sequence[str]) -> str:
    """The shell command that fetches ``model_ids``."""
    return "glimpse3d models download " + " ".join(model_ids)


class ModelError(RuntimeError):
    """Base class of the model manager's errors."""


class UnknownModelError(ModelError, ValueError):
    """A model id that is not in the registry."""

    def __init__(self, model_id: str, known: Sequence[str]) -> None:
        super().__init__(f"unknown model id {model_id!r}; known ids: {', '.join(sorted(known))} "
                         "(see `glimpse3d models list`)")
        self.model_id = model_id


class MissingWeightsError(ModelError, FileNotFoundError):
    """Weights a backend needs are not on this machine (nothing is downloaded at run time)."""

    def __init__(self, model_ids: Sequence[str], details: Sequence[str] = ()) -> None:
        self.model_ids = list(model_ids)
        lines = [f"model weights missing: {', '.join(self.model_ids)}", *details,
                 f"fetch them with `{download_command(self.model_ids)}` (needs network access), "
                 "or choose a weight-free backend"]
        super().__init__("\n".join(lines))


class CorruptWeightsError(ModelError, ValueError):
    """A weight file exists but fails a check (size, checksum, structure, or strict loading)."""

    def __init__(self, model_id: str, problem: str) -> None:
        self.model_id = model_id
        super().__init__(f"model {model_id!r}: {problem}; re-fetch it with `{download_command([model_id])}`")
