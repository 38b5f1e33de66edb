"""Run the load test's users without a server and print every request they make, one JSON line each
(``user``, ``method``, ``url``, ``name``, ``json``).

Requests go to a recording client that answers like the API (202 for events, a list for recommendations, a
profile), so the users' own checks run too; a failed check is reported on stderr and exits with 1. Shows what the
load test sends without any load; ``tests/unit/test_load_tests.py`` validates the payloads against the schema::

    .venv/bin/python load_tests/dryrun.py --iterations 20 --seed 1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections.abc import Sequence
from typing import Any, Literal, cast
from urllib.parse import parse_qs


class FakeResponse:
    """Enough of locust's response context manager for ``FastHttpUser.rest``."""

    def __init__(self, status_code: int, payload: Any, failures: list[str]) -> None:
        self.status_code = status_code
        self.text = json.dumps(payload)
        self.content = self.text.encode()
        self.error: Exception | None = None
        self._failures = failures

    def json(self) -> Any:
        return json.loads(self.text)

    def failure(self, exc: object) -> None:
        self._failures.append(str(exc))

    def success(self) -> None:
        pass

    def __enter__(self) -> FakeResponse:
        return self

    def __exit__(self, *_exc: object) -> Literal[False]:
        return False


class RecordingClient:
    """Stands in for ``FastHttpSession``: records each request and answers like the API would."""

    def __init__(self, user: str, out: list[dict[str, Any]], failures: list[str]) -> None:
        self.user = user
        self.out = out
        self.failures = failures

    def request(self, method: str, url: str, name: str | None = None, json: Any = None, **_kw: Any) -> FakeResponse:
        self.out.append({"user": self.user, "method": method, "url": url, "name": name, "json": json})
        status, payload = answer(method, url, json)
        return FakeResponse(status, payload, self.failures)


def answer(method: str, url: str, body: Any) -> tuple[int, Any]:
    path, _, query = url.partition("?")
    parts = path.strip("/").split("/")
    if method == "POST" and path == "/v1/events":
        count = len(body) if isinstance(body, list) else 1
        return 202, {"accepted": count, "rejected": 0, "errors": []}
    if method == "GET" and parts[:2] == ["v1", "customers"] and parts[-1] == "recommendations":
        n = int(parse_qs(query).get("n", ["10"])[0])
        items = [{"item_id": f"sku-{i:05d}", "score": 1.0 / (i + 1), "reason": "trending"} for i in range(n)]
        return 200, {"recommendation_id": "0" * 32, "strategy": "trending", "model_version": "fake", "items": items}
    if method == "GET" and parts[:2] == ["v1", "customers"] and parts[-1] == "profile":
        return 200, {"customer_id": parts[2], "events_total": 1}
    return 404, {"detail": f"no fake answer for {method} {url}"}


def record(iterations: int, seed: int) -> tuple[list[dict[str, Any]], list[str]]:
    """Every task of every user class once, then ``iterations`` tasks picked by weight, per user class."""
    os.environ["ECRM_LOAD_SEED"] = str(seed)  # read when the locustfile is imported
    import locustfile  # imports locust, which monkey-patches the standard library (gevent)
    from locust.env import Environment

    classes = [locustfile.Shopper, locustfile.RecommendationWidget]
    env = Environment(user_classes=list(classes))
    requests: list[dict[str, Any]] = []
    failures: list[str] = []
    rng = random.Random(seed)
    for cls in classes:
        cls.host = "http://127.0.0.1:9"  # never contacted: the client is replaced below
        user = cls(env)
        cast(Any, user).client = RecordingClient(cls.__name__, requests, failures)
        user.on_start()
        tasks: list[Any] = list(user.tasks)
        for run in [*dict.fromkeys(tasks), *(rng.choice(tasks) for _ in range(iterations))]:
            run(user)
    return requests, failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=20, help="tasks per user class after one of each")
    parser.add_argument("--seed", type=int, default=1, help="seed of the payloads and of the task order")
    args = parser.parse_args(argv)
    requests, failures = record(args.iterations, args.seed)
    for req in requests:
        print(json.dumps(req))
    for failure in failures:
        print(f"check failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
