"""The engine's exceptions, in one tree (the way httpx documents its own at the top of one module).

Adapters map lower-level errors to these at the boundary, in one place each: redis-py's in :mod:`core.redis`,
kafka-python's and aiokafka's in :mod:`core.kafka`. Everything above the ground floor catches only these classes,
and the API maps them to HTTP in one place (:mod:`api.errors`)::

    EngineError
    ├── ServiceUnavailable ........ a backing service cannot serve now: retry later (HTTP 503)
    │   ├── StoreUnavailable ...... Redis: connection, timeout, OOM, READONLY, MASTERDOWN, TRYAGAIN, LOADING, BUSY
    │   └── BrokerUnavailable ..... Kafka: cannot connect, produce, or administer topics
    │       └── DeliveryFailed .... some produced messages were not acknowledged (counts of delivered and failed)
    ├── StoreRefused .............. Redis refused a command for the data it was given (not transient: never retry)
    ├── RegistryError ............. a model version asked for does not exist, or there is none to roll back to
    ├── TrainingError
    │   ├── NothingToTrain ........ the interaction log is empty
    │   └── TrainingBusy .......... another training holds the lock
    ├── ConfigError ............... a configuration file or setting is invalid (segment rules, ECRM_API_KEYS ...)
    └── RequestError .............. a request the engine cannot take (HTTP 4xx)
        ├── BadRequest ............ not JSON, an empty batch, a bad cursor (400)
        ├── NotFound .............. a named resource does not exist (404)
        ├── PayloadTooLarge ....... a body or batch over the configured limit (413)
        ├── Unauthorized .......... no valid API key (401)
        ├── Forbidden ............. the API key lacks the scope (403)
        └── RateLimited ........... over the rate limit: ``retry_after_s`` (429)

A :class:`StoreUnavailable` names its ``reason`` (``connection``, ``timeout``, ``oom``, ``readonly``,
``masterdown``, ``tryagain``, ``loading``, ``busy``, ``clusterdown``, ``noscript``): the worker retries all of them
and never dead-letters an event because of one. Invalid events are not exceptions of this tree:
:class:`schemas.InvalidEvent` says which field and why, and the event goes to the dead-letter topic.
"""

from __future__ import annotations


class EngineError(Exception):
    """The root of the engine's own exceptions."""


class ServiceUnavailable(EngineError):
    """A backing service (Redis, Kafka) cannot serve now; the same request may succeed later."""


class StoreUnavailable(ServiceUnavailable):
    """Redis could not be reached or is in a state where it cannot serve (``reason`` names which)."""

    def __init__(self, message: str, reason: str = "connection") -> None:
        super().__init__(message)
        self.reason = reason


class BrokerUnavailable(ServiceUnavailable):
    """The Kafka broker could not be reached or refused the request."""


class DeliveryFailed(BrokerUnavailable):
    """Messages a producer sent were not acknowledged by the broker: ``failed`` of them, after ``delivered``
    were (the producer stops at the first failed batch: the rest of its input was not sent)."""

    def __init__(self, message: str, delivered: int, failed: int) -> None:
        super().__init__(message)
        self.delivered = delivered
        self.failed = failed


class StoreRefused(EngineError):
    """Redis refused a command because of the data it was given (a script error on one event). Retrying the same
    data fails the same way, so the worker isolates the event and dead-letters it."""


class RegistryError(EngineError, LookupError):
    """A model version asked for does not exist, or there is no earlier version to roll back to."""


class TrainingError(EngineError):
    """A training could not run."""


class NothingToTrain(TrainingError):
    """The interaction log is empty."""


class TrainingBusy(TrainingError):
    """Another training holds the lock."""


class ConfigError(EngineError, ValueError):
    """A configuration file is invalid: the message names the entry, the field and the reason."""


class RequestError(EngineError, ValueError):
    """A request the engine cannot take."""


class BadRequest(RequestError):
    """A request that cannot be read (not JSON, empty batch, a malformed cursor ...)."""


class NotFound(RequestError, LookupError):
    """A named resource that does not exist."""


class PayloadTooLarge(RequestError):
    """A request body or batch over the configured limit."""


# --- access control (api/auth.py, api/ratelimit.py) ---


class Unauthorized(RequestError):
    """No API key, or one that is not configured (``invalid_token``) (HTTP 401)."""

    def __init__(self, message: str, invalid_token: bool = False) -> None:
        super().__init__(message)
        self.invalid_token = invalid_token


class Forbidden(RequestError):
    """A valid API key without the scope the request needs (HTTP 403); ``scope`` names the one needed."""

    def __init__(self, message: str, scope: str) -> None:
        super().__init__(message)
        self.scope = scope


class RateLimited(RequestError):
    """Over the rate limit (HTTP 429): retry after ``retry_after_s`` seconds."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
