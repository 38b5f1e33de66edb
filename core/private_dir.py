"""Per-user runtime folders in a shared temporary directory (``/tmp/ecrm-<uid>``, ``/tmp/ecrm-models-<uid>``):
created ``0700``, and refused when another user owns them or they are not a plain folder.

Their names are predictable, so another user of the host could create one first (a symlink, or a folder they own
and can write) and have this user's engine read their state file or load their model files. A folder of this user
with looser permissions is tightened to ``0700``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from core.errors import ConfigError

PRIVATE_MODE = 0o700


class UnsafeDirectory(ConfigError):
    """A runtime folder that is not this user's own private folder."""


def foreign_dir(path: Path) -> str | None:
    """Why an existing ``path`` is not this user's own folder (a symbolic link, not a folder, another owner), or
    None (also when it does not exist; pure but for the ``lstat``)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a folder"
        return f"{path} is {kind}"
    uid = os.getuid()
    if info.st_uid != uid:
        return f"{path} belongs to user id {info.st_uid}, not to this user ({uid})"
    return None


def private_dir(path: Path, what: str = "runtime folder") -> Path:
    """``path`` as this user's private folder: created ``0700`` (with its parents) when missing, checked when it
    exists. Raises :class:`UnsafeDirectory` naming the folder, its owner and what to do."""
    try:
        path.mkdir(mode=PRIVATE_MODE, parents=True)
    except FileExistsError:
        pass
    problem = foreign_dir(path)
    if problem is not None:
        raise UnsafeDirectory(
            f"{what}: {problem}: refusing to use it (another user could read or replace what is kept there); "
            "remove it or choose another folder"
        )
    if stat.S_IMODE(os.lstat(path).st_mode) != PRIVATE_MODE:
        os.chmod(path, PRIVATE_MODE)
    return path
