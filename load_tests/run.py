"""Run the load test end to end on this machine, and leave nothing running.

Starts ``ecrm up --port <free port>`` (embedded broker and Redis, a worker, the API and the demo data, all on
127.0.0.1), waits for ``/health/ready`` and the demo customers' profiles, runs locust headless against it for a
bounded time with a bounded number of users, writes the CSV stats (and an HTML report) to a directory, prints a
per-endpoint summary and stops everything. Ctrl-C (or SIGTERM) stops the run early and still cleans up::

    .venv/bin/python load_tests/run.py                     # 60 s, up to 20 users
    .venv/bin/python load_tests/run.py --run-time 30 --users 10
    .venv/bin/python load_tests/run.py --target http://127.0.0.1:8000   # a stack you started yourself

Exit code: locust's (0 when the targets are met, 1 when not), 2 when the stack did not come up, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

import httpx

from runtime.embedded import die_with_parent, free_port

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile.py"
SHIPPED_CAMPAIGNS = HERE.parent / "config" / "campaigns.yaml"
MAX_USERS = 200
MAX_RUN_TIME_S = 600
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class RunError(RuntimeError):
    """The stack under test did not come up."""


def parse_duration(text: str) -> int:
    """Seconds from ``90``, ``90s``, ``2m`` or ``1m30s``."""
    match = re.fullmatch(r"\s*(?:(\d+)m)?\s*(?:(\d+)s?)?\s*", text)
    if not match or not any(match.groups()):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use 60, 60s, 2m or 1m30s)")
    seconds = int(match.group(1) or 0) * 60 + int(match.group(2) or 0)
    if not 1 <= seconds <= MAX_RUN_TIME_S:
        raise argparse.ArgumentTypeError(f"run time must be between 1 s and {MAX_RUN_TIME_S} s")
    return seconds


def bounded_users(text: str) -> int:
    users = int(text)
    if not 1 <= users <= MAX_USERS:
        raise argparse.ArgumentTypeError(f"users must be between 1 and {MAX_USERS}")
    return users


def loopback_url(text: str) -> str:
    host = urlsplit(text).hostname
    if host not in LOOPBACK:
        raise argparse.ArgumentTypeError(f"load tests only target this machine (127.0.0.1), not {host!r}")
    return text.rstrip("/")


# -- child processes ------------------------------------------------------------------------------------------


def session_members(sid: int) -> list[int]:
    """Live processes of session ``sid`` (Linux ``/proc``): a child started in its own session and everything it
    started (unless one of them left the session)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()  # state, ppid, pgrp, session, ...
            if int(fields[3]) == sid and fields[0] != "Z":
                pids.append(int(stat.parent.name))
    return pids


@dataclass
class Child:
    """A child in its own session (so Ctrl-C reaches only this runner, which stops it in order), that also dies
    with this runner if the runner is killed (``PR_SET_PDEATHSIG``)."""

    name: str
    proc: subprocess.Popen[bytes]

    @classmethod
    def start(cls, name: str, argv: list[str], env: dict[str, str], log: Path | None = None) -> Child:
        out = open(log, "ab") if log is not None else None  # the child inherits it; ours is closed below
        try:
            proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if out is not None else None,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        finally:
            if out is not None:
                out.close()
        return cls(name, proc)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: signal.Signals, grace_s: float) -> None:
        """``sig``, then after ``grace_s`` SIGKILL to whatever is left of the child's session."""
        if self.alive():
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                print(f"{self.name} did not stop within {grace_s:.0f} s: killing it", file=sys.stderr)
        for _ in range(25):
            left = session_members(self.proc.pid)
            if not left:
                return
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=0.2)
        print(f"warning: processes of {self.name} still running: {session_members(self.proc.pid)}", file=sys.stderr)


@contextlib.contextmanager
def interrupted_by_sigterm() -> Iterator[None]:
    """SIGTERM and SIGHUP stop the run like Ctrl-C does."""

    def _raise(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, _raise) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def uninterruptible() -> Iterator[None]:
    """Clean-up runs to the end (it is bounded by its own timeouts): a second Ctrl-C does not cut it short."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in sigs}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# -- the stack under test -------------------------------------------------------------------------------------


def wait_until(what: str, check: Callable[[], bool], timeout_s: float, child: Child | None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child is not None and not child.alive():
            raise RunError(f"{child.name} exited with code {child.proc.returncode} while waiting for {what}")
        with contextlib.suppress(httpx.HTTPError):
            if check():
                return
        time.sleep(0.5)
    raise RunError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def wait_for_stack(base: str, customers: int, child: Child | None, timeout_s: float) -> None:
    """``/health/ready``, then the first and the last demo customer's profile (the demo has been consumed)."""
    key = os.environ.get("ECRM_LOAD_API_KEY", "").strip()
    headers = {"Authorization": f"Bearer {key}"} if key else None
    with httpx.Client(base_url=base, timeout=5.0, headers=headers) as http:
        wait_until(f"{base}/health/ready", lambda: http.get("/health/ready").status_code == 200, timeout_s, child)
        for path in (f"/v1/customers/cust-{index:05d}/profile" for index in (0, customers - 1)):

            def has_profile(path: str = path) -> bool:
                return http.get(path).status_code == 200

            wait_until(f"{base}{path}", has_profile, timeout_s, child)


# -- the summary ----------------------------------------------------------------------------------------------

_COLUMNS = (
    ("Requests", "Request Count"),
    ("Fails", "Failure Count"),
    ("req/s", "Requests/s"),
    ("p50 ms", "50%"),
    ("p95 ms", "95%"),
    ("p99 ms", "99%"),
    ("max ms", "Max Response Time"),
)


def summary(stats_csv: Path, failures_csv: Path) -> str:
    """Per endpoint: requests, failures, requests/s and p50/p95/p99/max, from locust's CSV; then the failures."""
    rows = list(csv.DictReader(stats_csv.open()))
    width = max([len(f"{r['Type']} {r['Name']}".strip()) for r in rows] + [8])
    lines = [f"{'endpoint':<{width}} " + " ".join(f"{title:>9}" for title, _ in _COLUMNS)]
    for row in rows:
        label = f"{row['Type']} {row['Name']}".strip()
        cells = []
        for _, key in _COLUMNS:
            value = row.get(key, "")
            with contextlib.suppress(ValueError):
                value = f"{float(value):.1f}" if key == "Requests/s" else f"{float(value):.0f}"
            cells.append(f"{value:>9}")
        lines.append(f"{label:<{width}} " + " ".join(cells))
    if failures_csv.exists():
        for row in csv.DictReader(failures_csv.open()):
            lines.append(f"failure x{row['Occurrences']}: {row['Method']} {row['Name']}: {row['Error'][:160]}")
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-time", type=parse_duration, default=60, help="load duration (default 60s)")
    parser.add_argument("--users", type=bounded_users, default=20, help=f"peak users (default 20, max {MAX_USERS})")
    parser.add_argument("--spawn-rate", type=float, default=None, help="users started per second (default users/4)")
    parser.add_argument("--customers", type=int, default=200, help="demo customers (ecrm up --customers)")
    parser.add_argument("--p95-ms", type=float, default=None, help="target p95 per endpoint (ECRM_LOAD_P95_MS)")
    parser.add_argument("--max-fail-ratio", type=float, default=None, help="target (ECRM_LOAD_MAX_FAIL_RATIO)")
    parser.add_argument("--out", type=Path, default=None, help="directory for CSV, HTML and logs (default: temp)")
    parser.add_argument(
        "--target", type=loopback_url, default=None, help="a running stack on 127.0.0.1 instead of starting one"
    )
    return parser.parse_args(argv)


def locust_env(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    env["ECRM_LOAD_CUSTOMERS"] = str(args.customers)
    if args.p95_ms is not None:
        env["ECRM_LOAD_P95_MS"] = str(args.p95_ms)
    if args.max_fail_ratio is not None:
        env["ECRM_LOAD_MAX_FAIL_RATIO"] = str(args.max_fail_ratio)
    return env


CSV_PREFIX = "ecrm"


def start_stack(args: argparse.Namespace, out: Path, children: list[Child]) -> str:
    """``ecrm up`` with the demo on a free port (or the ``--target``), ready; its base URL. Raises ``RunError``."""
    if args.target is not None:
        wait_for_stack(args.target, args.customers, None, timeout_s=10)
        return str(args.target)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = out / "ecrm-up.log"
    print(f"starting ecrm up on {base} with the demo ({args.customers} customers); log: {log}")
    up = [sys.executable, "-m", "ecrm", "up", "--port", str(port), "--customers", str(args.customers)]
    # every simulated user comes from 127.0.0.1, one client for the collector's rate limit: lift it (unless set)
    # and run with the shipped files: the shipped campaigns file (no campaign), not the demo's own campaign
    # the demo is one open shop on loopback when ECRM_API_KEYS is set, even empty (unset: two shops with keys of
    # its own, which the simulated users do not have); set it and ECRM_LOAD_API_KEY to measure with keys
    env = {
        "ECRM_RATE_LIMIT": "100000/second",
        "ECRM_CAMPAIGNS_FILE": str(SHIPPED_CAMPAIGNS),
        "ECRM_API_KEYS": "",
        **os.environ,
    }
    children.append(Child.start("ecrm up", up, env, log))
    started = time.monotonic()
    try:
        wait_for_stack(base, args.customers, children[-1], timeout_s=180)
    except RunError as exc:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise RunError(f"{exc}\n--- last lines of {log} ---\n{tail}") from exc
    print(f"stack ready with the demo loaded in {time.monotonic() - started:.1f} s")
    return base


def run_locust(args: argparse.Namespace, out: Path, base: str, children: list[Child]) -> int:
    spawn_rate = args.spawn_rate or max(1.0, args.users / 4)
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", base,
        "--users", str(args.users), "--spawn-rate", f"{spawn_rate:g}", "--run-time", f"{args.run_time}s",
        "--stop-timeout", "5", "--only-summary", "--csv", str(out / CSV_PREFIX), "--html", str(out / "report.html"),
    ]  # fmt: skip
    print(f"locust: {args.run_time} s, up to {args.users} users, against {base}")
    locust = Child.start("locust", command, locust_env(args))
    children.append(locust)
    try:
        return locust.proc.wait(timeout=args.run_time + 60)
    except subprocess.TimeoutExpired:
        print("locust overran its run time by 60 s: stopping it", file=sys.stderr)
        return 1


def run(args: argparse.Namespace, out: Path) -> int:
    """Start, load, stop. Whatever happens (an error, Ctrl-C, SIGTERM), every child is stopped before returning:
    locust first (SIGINT: it stops its users, writes its stats and quits), then ``ecrm up`` (SIGINT: it stops the
    API, the worker and the embedded servers in order)."""
    children: list[Child] = []
    try:
        with interrupted_by_sigterm():
            code = run_locust(args, out, start_stack(args, out, children), children)
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("\ninterrupted: stopping", file=sys.stderr)
        code = 130
    finally:
        with uninterruptible():
            for child in reversed(children):
                child.stop(signal.SIGINT, grace_s=30)
    stats = out / f"{CSV_PREFIX}_stats.csv"
    if stats.exists():
        how = "interrupted" if code == 130 else f"{args.run_time} s"
        print(f"\nsummary ({how}, up to {args.users} users; CSV and HTML in {out}):")
        print(summary(stats, out / f"{CSV_PREFIX}_failures.csv"))
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="ecrm-load-"))
    out.mkdir(parents=True, exist_ok=True)
    code = run(args, out)
    print(f"exit code {code}; results in {out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
