"""The asyncio Redis clients pack commands with hiredis (core/redis.py): the bytes sent are redis-py's own."""

from __future__ import annotations

import pytest
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import DataError

from core.redis import _hiredis_packing

COMMANDS: list[tuple[object, ...]] = [
    ("EVALSHA", "a" * 40, 2, "p:{c:1}:recent", "k ✓ x", '[{"t":"page_view"}]', 1.5, 0.1, 1e-7, -3, 2**63),
    ("SET", b"\x00\xff", "välue"),
    ("CONFIG GET", "maxmemory"),
    (b"CLIENT LIST",),
    ("HSET", "h", "f", "x" * 10_000),  # over redis-py's buffer cutoff
]


@pytest.mark.parametrize("command", COMMANDS)
def test_the_same_bytes_as_redis_py(command: tuple[object, ...]) -> None:
    fast = _hiredis_packing(Connection)()
    assert type(fast).__name__ == "HiredisConnection"
    assert b"".join(fast.pack_command(*command)) == b"".join(Connection().pack_command(*command))


def test_what_redis_py_refuses_is_still_refused() -> None:
    fast = _hiredis_packing(UnixDomainSocketConnection)(path="/nonexistent")
    with pytest.raises(DataError):
        fast.pack_command("SET", "k", True)
    with pytest.raises(DataError):
        fast.pack_command("SET", "k", None)


def test_another_encoding_is_packed_by_redis_py() -> None:
    fast = _hiredis_packing(Connection)(encoding="latin-1")
    assert b"".join(fast.pack_command("SET", "k", "é")) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n\xe9\r\n"
