"""Errors a user can act on.

Every error that the command line should print as one line (which file, what is wrong) derives
from :class:`VoxsepError`. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import os


class VoxsepError(Exception):
    """An error caused by the user's input or environment, reported as one line."""


class AudioError(VoxsepError):
    """A file that cannot be used as audio; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # rebuilt from its two parts when it crosses from a worker process
        return type(self), (self.path, self.reason)
