"""The one rule for commands that read audio files (``separate``, ``count``, ``enhance``, ``vocode``).

1. Inputs are files or folders (searched recursively for audio files); a folder without audio
   is a bad input.
2. Every input is checked (exists, readable audio, has samples, a supported channel layout)
   before any model is loaded or anything is written. A bad input stops the command: one line
   naming it, exit status 2, no output.
3. Outputs are built in a staging folder inside ``OUT`` and moved to their names only when
   every input is done. So a failure past the check (audio that cannot be decoded beyond its
   header, NaN samples, a model error, Ctrl-C) leaves no output either: after a run ``OUT`` holds
   all of its outputs or none of them (outputs of earlier runs stay until replaced).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from frontend import audio_info, find_audio_files
from frontend.errors import VoxsepError

#: The rule in one sentence, for each command's --help.
BAD_FILE_RULE = ("Every input is checked before anything is written: a bad file stops the command with one "
                 "line naming it (exit 2) and no output; outputs appear only when every input is done.")


def expand_inputs(inputs: list[str]) -> list[tuple[Path, Path | None]]:
    """``(file, the folder it was found in or None)`` for files named or found in folders, in order.

    Raises:
        VoxsepError: a folder without audio files.
    """
    found: list[tuple[Path, Path | None]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = find_audio_files(path)
            if not files:
                raise VoxsepError(f"{path}: no audio files in this folder")
            found += [(f, path) for f in files]
        else:
            found.append((path, None))
    return found


def check_inputs(inputs: list[str]) -> list[tuple[Path, Path | None]]:
    """:func:`expand_inputs`, then every file's header checked (rule 2).

    Raises:
        VoxsepError: (an :class:`frontend.errors.AudioError`) naming the first bad input.
    """
    found = expand_inputs(inputs)
    for path, _ in found:
        audio_info(path)
    return found


class StagedOutput:
    """Outputs written under :attr:`folder` (a staging folder inside ``out_dir``) and moved to
    ``out_dir`` by :func:`staged_output` when the block ends without an error (rule 3)."""

    def __init__(self, out_dir: Path, folder: Path):
        self.out_dir = out_dir
        self.folder = folder
        self._entries: list[Path] = []

    def path(self, relative: str | os.PathLike) -> Path:
        """Where to write the output ``relative`` (a file or a folder) now; its parents are made."""
        relative = Path(relative)
        if relative.is_absolute() or ".." in relative.parts:
            raise ValueError(f"output paths are relative to the output folder, got {relative}")
        self._entries.append(relative)
        target = self.folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def final(self, relative: str | os.PathLike) -> Path:
        """The name the output ``relative`` will have once moved into place."""
        return self.out_dir / relative

    def _commit(self) -> None:
        for relative in self._entries:
            source, target = self.folder / relative, self.out_dir / relative
            if not source.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(source, target)


@contextlib.contextmanager
def staged_output(out_dir: str | os.PathLike) -> Iterator[StagedOutput]:
    """Stage a command's outputs; move them into ``out_dir`` only if the block succeeds.

    On any error the staging folder is removed, and so is ``out_dir`` if this call created it.
    """
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = StagedOutput(out_dir, Path(tempfile.mkdtemp(prefix=".voxsep-", suffix=".part", dir=out_dir)))
    try:
        yield stage
        stage._commit()
    finally:
        shutil.rmtree(stage.folder, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # only if empty: nothing was committed
