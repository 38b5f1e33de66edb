"""Where a running ``ecrm up`` is: a small state file in a per-user runtime directory, so the commands of a second
shell find its broker, Redis and API without any variable.

``ecrm up`` writes ``up.json`` (its pid and the addresses of its servers) once it is ready and removes it when it
stops. Every other command reads it through :func:`core.settings.get_settings` when no address variable
(``ECRM_KAFKA_BOOTSTRAP``, ``ECRM_REDIS_URL``) is set; a file whose pid is dead is ignored. The directory is
``$ECRM_RUNTIME_DIR``, else ``$XDG_RUNTIME_DIR/ecrm``, else ``ecrm-<uid>`` in the temporary directory: created 0700,
refused when another user owns it (:mod:`core.private_dir`). A state file in a folder not private to this user is
not read either.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ValidationError

from core.private_dir import foreign_dir, private_dir

log = logging.getLogger(__name__)

STATE_FILE = "up.json"
ADDRESS_VARIABLES = ("ECRM_KAFKA_BOOTSTRAP", "ECRM_REDIS_URL")
START_HINT = "start the engine with `make run` or `.venv/bin/ecrm up` (in another shell), or set {variable}"


class RunState(BaseModel):
    """What a running ``ecrm up`` publishes about itself."""

    pid: int
    kafka_bootstrap: str
    redis_url: str
    api_url: str
    events_topic: str
    dlq_topic: str
    key_prefix: str
    campaigns_file: str | None = None  # the demo's own campaigns file, when ``ecrm up`` plays it
    erasure_log_file: str = ""  # ecrm up --data-dir: the erasure log file of its data folder (read by ecrm restore)
    training_log_dir: str = ""  # ecrm up --data-dir: the training-log store of its data folder (trainings, backups)

    def addresses(self) -> dict[str, str]:
        """The settings fields that locate the engine (for ``Settings.model_copy(update=...)``), the campaigns
        file the running engine reads (so ``ecrm campaign report`` of another shell sees the demo's campaign) and
        its erasure log file (read by ``ecrm restore``)."""
        found = {
            "kafka_bootstrap": self.kafka_bootstrap,
            "redis_url": self.redis_url,
            "events_topic": self.events_topic,
            "dlq_topic": self.dlq_topic,
            "key_prefix": self.key_prefix,
        }
        if self.campaigns_file is not None:
            found["campaigns_file"] = self.campaigns_file
        if self.erasure_log_file:
            found["erasure_log_file"] = self.erasure_log_file
        if self.training_log_dir:
            found["training_log_dir"] = self.training_log_dir
        return found


def runtime_dir(env: Mapping[str, str] | None = None) -> Path:
    """The per-user directory of the state file (not created here)."""
    env = os.environ if env is None else env
    if env.get("ECRM_RUNTIME_DIR"):
        return Path(env["ECRM_RUNTIME_DIR"])
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "ecrm"
    return Path(tempfile.gettempdir()) / f"ecrm-{os.getuid()}"


def state_path(env: Mapping[str, str] | None = None) -> Path:
    return runtime_dir(env) / STATE_FILE


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: not ours, but alive
        return True
    try:
        return " Z " not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]
    except OSError:
        return True


def read_state(env: Mapping[str, str] | None = None) -> RunState | None:
    """The state of a live ``ecrm up``, or None (no file, an unreadable one, one left by a dead process, or one in a
    folder that is not this user's own: that is logged, the file is not trusted)."""
    problem = foreign_dir(runtime_dir(env))
    if problem is not None:
        log.warning("%s; the running engine is not looked up there", problem)
        return None
    try:
        state = RunState.model_validate_json(state_path(env).read_bytes())
    except (OSError, ValidationError):
        return None
    return state if pid_alive(state.pid) else None


def write_state(state: RunState, env: Mapping[str, str] | None = None) -> Path | None:
    """Publish ``state`` (atomically, readable by the user only). Returns the file, or None when another live
    ``ecrm up`` already holds it (that one stays the one commands find)."""
    other = read_state(env)
    if other is not None and other.pid != state.pid:
        return None
    directory = private_dir(runtime_dir(env), "the runtime folder (ECRM_RUNTIME_DIR)")
    path = directory / STATE_FILE
    tmp = directory / f".{STATE_FILE}.{state.pid}"
    tmp.write_text(state.model_dump_json(indent=2))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def remove_state(pid: int, env: Mapping[str, str] | None = None) -> None:
    """Remove the state file if it is ``pid``'s."""
    path = state_path(env)
    try:
        if RunState.model_validate_json(path.read_bytes()).pid == pid:
            path.unlink()
    except (OSError, ValidationError):
        pass


def addresses_set(env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment names the broker or Redis itself (then the state file is not read)."""
    env = os.environ if env is None else env
    return any(name in env for name in ADDRESS_VARIABLES)


def start_hint(variable: str) -> str:
    """How to get a server to talk to, for the one-line error of a command that found none."""
    return START_HINT.format(variable=variable)
