"""The error tree and the Redis error classification (by exception class, not by message text)."""

from __future__ import annotations

import pytest
from redis import exceptions as rx

from core import errors
from core.redis import map_error, redis_errors, transient_reason


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        # redis-py strips the code from the message of the classes it knows: the class decides
        (rx.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), "oom"),
        (rx.ReadOnlyError("You can't write against a read only replica."), "readonly"),
        (rx.BusyLoadingError("Redis is loading the dataset in memory"), "loading"),
        (rx.MasterDownError("Link with MASTER is down"), "masterdown"),
        (rx.TryAgainError("Multiple keys request during rehashing of slot"), "tryagain"),
        (rx.ClusterDownError("The cluster is down"), "clusterdown"),
        (rx.NoScriptError("No matching script"), "noscript"),
        (rx.TimeoutError("Timeout reading from socket"), "timeout"),
        (rx.ConnectionError("Connection refused"), "connection"),
        (ConnectionRefusedError(111, "refused"), "connection"),
        # codes redis-py has no class for keep their code in the message
        (rx.ResponseError("BUSY Valkey is busy running a script."), "busy"),
        (rx.ResponseError("MASTERDOWN Link with MASTER is down"), "masterdown"),
        (rx.ResponseError("TRYAGAIN Multiple keys request"), "tryagain"),
        (rx.ResponseError("LOADING Redis is loading"), "loading"),
    ],
)
def test_transient_states_are_retried(exc: Exception, reason: str) -> None:
    assert transient_reason(exc) == reason
    mapped = map_error(exc, "doing it")
    assert isinstance(mapped, errors.StoreUnavailable) and isinstance(mapped, errors.ServiceUnavailable)
    assert mapped.reason == reason and "doing it" in str(mapped)


@pytest.mark.parametrize(
    "exc",
    [
        rx.ResponseError("user_script:12: Script attempted to access nonexistent global variable"),
        rx.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        rx.ResponseError("value is not an integer or out of range"),
        rx.DataError("Invalid input of type: 'NoneType'"),
    ],
)
def test_refusals_of_the_data_are_not_retried(exc: Exception) -> None:
    assert transient_reason(exc) is None
    assert isinstance(map_error(exc, "x"), errors.StoreRefused)


def test_redis_errors_maps_at_the_boundary() -> None:
    with pytest.raises(errors.StoreUnavailable) as caught, redis_errors("reading profile 'c:x'"):
        raise rx.ReadOnlyError("You can't write against a read only replica.")
    assert caught.value.reason == "readonly"
    assert isinstance(caught.value.__cause__, rx.ReadOnlyError)
    with pytest.raises(errors.StoreRefused), redis_errors("applying"):
        raise rx.ResponseError("user_script:1: bad")
    with redis_errors("nothing"):
        pass  # no error, nothing raised


def test_the_tree_is_one_tree() -> None:
    for name in ("ServiceUnavailable", "StoreRefused", "RegistryError", "TrainingError", "ConfigError", "RequestError"):
        assert issubclass(getattr(errors, name), errors.EngineError)
    assert issubclass(errors.BrokerUnavailable, errors.ServiceUnavailable)
    assert issubclass(errors.NothingToTrain, errors.TrainingError) and issubclass(
        errors.TrainingBusy, errors.TrainingError
    )
    for name in ("BadRequest", "NotFound", "PayloadTooLarge"):
        assert issubclass(getattr(errors, name), errors.RequestError)
    documented = errors.__doc__ or ""
    public = [n for n, v in vars(errors).items() if isinstance(v, type) and issubclass(v, Exception)]
    assert all(name in documented for name in public), "every exception is drawn in the module's docstring"
