"""The state file of ``ecrm up`` (core/runstate.py) and how the commands find the engine through it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core import runstate
from core.settings import Settings, get_settings
from ecrm.cli import app
from ecrm.commands import runtime

runner = CliRunner()


def _state(pid: int, kafka: str = "127.0.0.1:1111") -> runstate.RunState:
    return runstate.RunState(
        pid=pid,
        kafka_bootstrap=kafka,
        redis_url="redis://127.0.0.1:2222/0",
        api_url="http://127.0.0.1:3333",
        events_topic="ecrm.events",
        dlq_topic="ecrm.events.dlq",
        key_prefix="ecrm",
    )


@pytest.fixture()
def rundir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("ECRM_RUNTIME_DIR", str(tmp_path / "rt"))
    for name in runstate.ADDRESS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield tmp_path / "rt"
    get_settings.cache_clear()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_runtime_dir_follows_the_variables() -> None:
    assert runstate.runtime_dir({"ECRM_RUNTIME_DIR": "/x/y", "XDG_RUNTIME_DIR": "/run/u"}) == Path("/x/y")
    assert runstate.runtime_dir({"XDG_RUNTIME_DIR": "/run/u"}) == Path("/run/u/ecrm")
    assert runstate.runtime_dir({}).name == f"ecrm-{os.getuid()}"


def test_commands_find_a_live_up_through_its_state_file(rundir: Path) -> None:
    path = runstate.write_state(_state(os.getpid()))
    assert path == rundir / "up.json" and oct(path.stat().st_mode & 0o777) == "0o600"
    settings = get_settings()
    assert settings.kafka_bootstrap == "127.0.0.1:1111" and settings.redis_url == "redis://127.0.0.1:2222/0"
    runstate.remove_state(os.getpid())
    assert not path.exists()


def test_a_stale_file_of_a_dead_pid_is_ignored_and_replaced(rundir: Path) -> None:
    runstate.write_state(_state(dead_pid()))
    assert runstate.read_state() is None
    assert get_settings().kafka_bootstrap == "127.0.0.1:9092"  # the default: nothing found
    assert runstate.write_state(_state(os.getpid(), "127.0.0.1:4444")) is not None
    assert runstate.read_state() == _state(os.getpid(), "127.0.0.1:4444")


def test_a_second_up_does_not_take_the_file_of_a_live_one(rundir: Path) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert runstate.write_state(_state(other.pid)) is not None
        assert runstate.write_state(_state(os.getpid(), "127.0.0.1:5555")) is None
        runstate.remove_state(os.getpid())  # not ours: stays
        assert runstate.read_state() == _state(other.pid)
    finally:
        other.kill()
        other.wait()


def test_an_address_variable_wins_over_the_state_file(rundir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runstate.write_state(_state(os.getpid()))
    monkeypatch.setenv("ECRM_REDIS_URL", "redis://127.0.0.1:6666/0")
    settings = get_settings()
    assert settings.redis_url == "redis://127.0.0.1:6666/0"
    assert settings.kafka_bootstrap == "127.0.0.1:9092"  # the state file is not read at all then


def test_with_nothing_running_commands_say_how_to_start_it(rundir: Path) -> None:
    runstate.write_state(_state(os.getpid(), f"127.0.0.1:{_closed_port()}"))
    for args in (["topics"], ["simulate", "--customers", "2"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "cannot reach Kafka" in lines[0]
        assert "`make run`" in lines[0] and "ECRM_KAFKA_BOOTSTRAP" in lines[0]


@pytest.mark.parametrize("command", ["worker", "api"])
def test_worker_and_api_fail_in_one_line_without_servers(
    command: str, rundir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing named, nothing found, nothing at the default addresses (closed ports here): one line, exit 2."""
    closed = Settings(kafka_bootstrap=f"127.0.0.1:{_closed_port()}", redis_url=f"redis://127.0.0.1:{_closed_port()}/0")
    monkeypatch.setattr(runtime, "get_settings", lambda: closed)
    result = runner.invoke(app, [command])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith(f"error: cannot reach Kafka at {closed.kafka_bootstrap}")
    assert "ECRM_KAFKA_BOOTSTRAP" in lines[-1] and "Traceback" not in result.output


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_asked_port_in_use_is_refused_and_a_free_one_is_taken() -> None:
    import socket

    from runtime.embedded import EmbeddedError, claim_port

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        with pytest.raises(EmbeddedError, match=f"port {taken} on 127.0.0.1 is in use"):
            claim_port(taken)
    assert claim_port(taken) == taken  # closed now: free again
    assert claim_port(None) > 0


def test_runtime_folders_are_private_and_refused_when_someone_else_owns_them(tmp_path: Path) -> None:
    import os
    import stat

    from core.private_dir import UnsafeDirectory, foreign_dir, private_dir

    made = private_dir(tmp_path / "ecrm-1000")
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o777)
    loose.chmod(0o777)
    assert stat.S_IMODE(private_dir(loose).stat().st_mode) == 0o700  # our own folder: tightened
    link = tmp_path / "link"
    link.symlink_to(made)
    with pytest.raises(UnsafeDirectory, match="is a symbolic link"):
        private_dir(link)
    other = tmp_path / "planted"
    other.mkdir(mode=0o777)
    if os.getuid() == 0:
        os.chown(other, 65534, 65534)  # as another user would have planted it
    else:
        other = Path("/")  # owned by root, not by this user
    with pytest.raises(UnsafeDirectory, match=r"belongs to user id \d+, not to this user"):
        private_dir(other, "the runtime folder")
    assert foreign_dir(other) is not None and foreign_dir(made) is None and foreign_dir(tmp_path / "none") is None


def test_a_state_file_in_someone_elses_folder_is_not_trusted(tmp_path: Path) -> None:
    import os

    planted = tmp_path / "run"
    planted.mkdir()
    env = {"ECRM_RUNTIME_DIR": str(planted)}
    where = {"kafka_bootstrap": "127.0.0.1:1", "redis_url": "redis://127.0.0.1:1/0", "api_url": "http://127.0.0.1:1"}
    state = runstate.RunState(pid=os.getpid(), events_topic="e", dlq_topic="d", key_prefix="p", **where)
    assert runstate.write_state(state, env) is not None and runstate.read_state(env) == state
    if os.getuid() == 0:
        os.chown(planted, 65534, 65534)  # as another user would have planted it
    else:
        env = {"ECRM_RUNTIME_DIR": "/"}  # owned by root, not by this user
    assert runstate.read_state(env) is None
