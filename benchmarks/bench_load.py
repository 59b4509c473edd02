"""Load test of a running API (the demo stack under gunicorn): mixed reads and writes from many clients.

Each client is a thread with its own keep-alive connection that loops for
--seconds over a fixed mix: GET /jobs, GET /faces, POST /search (a photo with
faces) and POST /jobs (one small photo, a distinct file each time so dedup
does not short-cut it). Prints per kind: requests, 5xx, other non-2xx,
connection errors, p50/p95/max latency; with --database-url also the most
PostgreSQL connections seen during the run (pg_stat_activity, sampled).

    make demo   # or: .venv/bin/python -m deploy.demo; prints the API URL and a token
    .venv/bin/python -m benchmarks.bench_load --url http://127.0.0.1:8000 --token TOKEN \\
        --clients 50 --seconds 60 --database-url "$(.venv/bin/python -m deploy.stack env --json | jq -r .DATABASE_URL)"

Targets (issue 16): 0 5xx, 0 connection errors, p95 < 1.5 s for the GETs.
Bounded: every client stops after --seconds; each request times out after --timeout.
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

import cv2
import urllib3

KINDS = ("GET /jobs", "GET /faces", "POST /search", "POST /jobs")
# Of every 10 requests: reads dominate, as with a UI polling jobs and browsing faces.
MIX = ["GET /jobs"] * 4 + ["GET /faces"] * 4 + ["POST /search"] + ["POST /jobs"]


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    server_errors: int = 0
    client_errors: int = 0
    connection_errors: int = 0
    timeouts: int = 0
    statuses: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    connection_error_kinds: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def probe_photo() -> bytes:
    """A portrait, as a user searching for one person sends (scikit-image's astronaut, 512x512)."""
    from ml.package_images import astronaut_bgr

    return cv2.imencode(".jpg", astronaut_bgr(), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def small_photo(seed: int) -> bytes:
    """A distinct small photo per upload (content-addressed dedup would skip repeats)."""
    from ml.package_images import astronaut_bgr

    img = cv2.resize(astronaut_bgr(), (256, 256))
    img[0, 0] = (seed % 256, (seed // 256) % 256, (seed // 65536) % 256)
    return cv2.imencode(".png", img)[1].tobytes()


def run_client(base: str, token: str, deadline: float, timeout: float, photo: bytes, seeds, tallies, lock,
               offset: int) -> None:
    http = urllib3.PoolManager(maxsize=1, retries=False, timeout=urllib3.Timeout(total=timeout))
    headers = {"Authorization": f"Token {token}"}
    kinds = itertools.cycle(MIX[offset % len(MIX):] + MIX[:offset % len(MIX)])
    while time.monotonic() < deadline:
        kind = next(kinds)
        started = time.monotonic()
        try:
            if kind == "GET /jobs":
                response = http.request("GET", f"{base}/api/v1/jobs", headers=headers)
            elif kind == "GET /faces":
                response = http.request("GET", f"{base}/api/v1/faces", headers=headers)
            elif kind == "POST /search":
                response = http.request("POST", f"{base}/api/v1/search", headers=headers,
                                        fields={"file": ("probe.jpg", photo, "image/jpeg"), "k": "3"})
            else:
                with lock:
                    seed = next(seeds)
                response = http.request("POST", f"{base}/api/v1/jobs", headers=headers,
                                        fields={"files": (f"load-{seed}.png", small_photo(seed), "image/png")})
        except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.TimeoutError):
            with lock:
                tallies[kind].timeouts += 1
            continue
        except urllib3.exceptions.HTTPError as exc:  # refused, reset, closed without an answer
            with lock:
                tallies[kind].connection_errors += 1
                tallies[kind].connection_error_kinds[connection_error_kind(exc)] += 1
            continue
        took = time.monotonic() - started
        with lock:
            tally = tallies[kind]
            tally.latencies.append(took)
            tally.statuses[response.status] += 1
            if response.status >= 500:
                tally.server_errors += 1
            elif response.status >= 400:
                tally.client_errors += 1


def connection_error_kind(exc: BaseException) -> str:
    """The innermost cause's class (ConnectionResetError, RemoteDisconnected, ...): says who hung up."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = (getattr(exc, "reason", None) or exc.__cause__ or exc.__context__
                 or next((arg for arg in exc.args if isinstance(arg, BaseException)), None))
        if not isinstance(inner, BaseException):
            break
        exc = inner
    return type(exc).__name__


def sample_connections(database_url: str, stop: threading.Event, seen: list[int]) -> None:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as connection:
        while not stop.wait(0.5):
            seen.append(connection.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
                        .fetchone()[0])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="API base, e.g. http://127.0.0.1:8000")
    parser.add_argument("--token", required=True)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--timeout", type=float, default=30, help="per request")
    parser.add_argument("--database-url", help="also report the most PostgreSQL client connections seen")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    photo = probe_photo()
    tallies = {kind: Tally() for kind in KINDS}
    lock = threading.Lock()
    seeds = itertools.count(uuid.uuid4().int % 10**6 * 1000)
    stop_sampling, connections_seen = threading.Event(), []
    sampler = None
    if args.database_url:
        sampler = threading.Thread(target=sample_connections, args=(args.database_url, stop_sampling, connections_seen),
                                   daemon=True)
        sampler.start()
    started = time.monotonic()
    deadline = started + args.seconds
    clients = [threading.Thread(target=run_client, args=(args.url.rstrip("/"), args.token, deadline, args.timeout,
                                                         photo, seeds, tallies, lock, i), daemon=True)
               for i in range(args.clients)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(args.seconds + args.timeout + 10)
    wall = time.monotonic() - started
    stop_sampling.set()

    gets = tallies["GET /jobs"].latencies + tallies["GET /faces"].latencies
    summary = {
        "clients": args.clients, "seconds": round(wall, 1),
        "requests": sum(len(t.latencies) for t in tallies.values()),
        "server_errors_5xx": sum(t.server_errors for t in tallies.values()),
        "connection_errors": sum(t.connection_errors for t in tallies.values()),
        "timeouts": sum(t.timeouts for t in tallies.values()),
        "get_p95_s": round(percentile(gets, 0.95), 3),
        "max_db_connections": max(connections_seen) if connections_seen else None,
        "per_kind": {
            kind: {"requests": len(t.latencies), "5xx": t.server_errors, "4xx": t.client_errors,
                   "connection_errors": t.connection_errors, "timeouts": t.timeouts,
                   "p50_s": round(statistics.median(t.latencies), 3) if t.latencies else None,
                   "p95_s": round(percentile(t.latencies, 0.95), 3), "max_s": round(max(t.latencies, default=0), 3),
                   "statuses": dict(t.statuses), "connection_error_kinds": dict(t.connection_error_kinds)}
            for kind, t in tallies.items()
        },
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{args.clients} clients for {wall:.0f}s: {summary['requests']} requests, "
              f"{summary['server_errors_5xx']} 5xx, {summary['connection_errors']} connection errors, "
              f"{summary['timeouts']} client timeouts (>{args.timeout:.0f}s), "
              f"GET p95 {summary['get_p95_s']:.3f}s, most DB connections seen {summary['max_db_connections']}")
        for kind, row in summary["per_kind"].items():
            print(f"  {kind:13} n={row['requests']:5}  5xx={row['5xx']}  4xx={row['4xx']}  "
                  f"conn_err={row['connection_errors']}  timeouts={row['timeouts']}  p50={row['p50_s']}s  p95={row['p95_s']}s  max={row['max_s']}s  "
                  f"{row['statuses']}" + (f" {row['connection_error_kinds']}" if row['connection_error_kinds'] else ""))
    ok = (summary["server_errors_5xx"] == 0 and summary["connection_errors"] == 0 and summary["timeouts"] == 0
          and summary["get_p95_s"] < 1.5)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
