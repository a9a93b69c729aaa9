"""Error types a person can act on. The CLI prints these as one line; the UIs show the message."""

from __future__ import annotations

from .checkpoint import CheckpointError


class ModelLoadError(Exception):
    """A model could not be found or fetched (bad path, unknown hub id, offline)."""


USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, CheckpointError, ModelLoadError,
                                                FileNotFoundError, PermissionError)
