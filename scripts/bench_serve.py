#!/usr/bin/env python
"""Load test of ``restore serve`` on loopback: N concurrent clients x M requests against one request at a time.

Starts ``restore serve`` (the shipped model unless ``--model``) on a free loopback port, sends
``--clients`` x ``--requests`` requests of one corrupted chunk each (the first chunks of the fixed
``test`` pairs, all different) first one at a time from one client (each restored alone: a batch
of one), then from ``--clients`` concurrent clients (threads, each with its own connection,
``--requests`` each, one after another), and prints the throughput, p50/p95 latency, the
batches the server formed and its time spent restoring them, with the machine and its load average. Every concurrent response must
equal the one-at-a-time response to the same text, field by field (restored text, spans, tokens,
chunks, faithfulness): nothing lost, duplicated or mixed up between requests; exits 1 otherwise.
(With int8 weights a few may differ: CTranslate2's int8 products depend on the batch's shape,
so those are counted and shown, not failed; float32 gives the same output in any batch.)

    python scripts/bench_serve.py --clients 8 --requests 25
    python scripts/bench_serve.py --clients 8 --requests 25 -- --compute-type float32
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from restore.cpu import machine_line  # noqa: E402
from restore.textio import parse_jsonl, read_data_text  # noqa: E402


def test_sources(path: Path, count: int) -> list[str]:
    """The first ``count`` distinct sources of a pair file."""
    seen: dict[str, None] = {}
    for record in parse_jsonl(read_data_text(path), str(path), required="source"):
        seen.setdefault(record["source"], None)
        if len(seen) == count:
            break
    if len(seen) < count:
        raise SystemExit(f"{path}: only {len(seen)} distinct sources, {count} needed")
    return list(seen)


def start_server(argv: list[str]) -> tuple[subprocess.Popen, str, str]:
    process = subprocess.Popen([sys.executable, "-m", "restore", "serve", "--port", "0", *argv],
                               stderr=subprocess.PIPE, text=True, cwd=REPO,
                               env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    line = process.stderr.readline()
    match = re.match(r"restore serve: (http://\S+/) .*engine: (.*)$", line.strip())
    if not match:
        process.kill()
        raise SystemExit(f"the server did not start: {line}{process.stderr.read()}")
    return process, match.group(1), match.group(2)


def run_clients(url: str, texts: list[str], clients: int) -> tuple[float, list[float], list[dict | None]]:
    """Send ``texts`` from ``clients`` threads (client k sends texts k*M..(k+1)*M-1 in order);
    the wall time, each request's latency and each response (``None``: not a 200)."""
    import httpx

    per_client = len(texts) // clients
    latencies = [0.0] * len(texts)
    responses: list[dict | None] = [None] * len(texts)

    def client(k: int) -> None:
        with httpx.Client(timeout=600) as http:
            for i in range(k * per_client, (k + 1) * per_client):
                start = time.perf_counter()
                reply = http.post(url + "restore", json={"text": texts[i]})
                latencies[i] = time.perf_counter() - start
                responses[i] = reply.json() if reply.status_code == 200 else None

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start, latencies, responses


def percentile(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1] if len(values) > 1 else values[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model directory (default: the shipped one)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=25, help="requests per client")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "eval" / "test.jsonl.xz")
    parser.add_argument("serve_options", nargs="*", help="more restore serve options, after --")
    args = parser.parse_args()
    try:
        import httpx  # the clients (restore[test] installs it)
    except ImportError:
        print("bench_serve.py: the load test needs httpx: pip install httpx (or pip install -e '.[test,serve]')", file=sys.stderr)
        return 2
    started = time.perf_counter()
    print(machine_line())
    texts = test_sources(args.data, args.clients * args.requests)
    words = sum(len(t.split()) for t in texts)
    argv = (["--model", args.model] if args.model else []) + args.serve_options
    process, url, engine = start_server(argv)
    try:
        print(f"server: restore serve {' '.join(argv)} at {url}; engine: {engine}")
        print(f"requests: {len(texts)} chunks of {args.data.name} ({words} source words, {words / len(texts):.1f} per request)")
        run_clients(url, texts[:1], 1)  # warm-up
        rows = []
        results = {}
        for mode, clients in (("one at a time", 1), (f"{args.clients} concurrent clients", args.clients)):
            before = httpx.get(url + "health").json()
            load = os.getloadavg()[0]
            wall, latencies, responses = run_clients(url, texts, clients)
            after = httpx.get(url + "health").json()
            batches = after["batches"] - before["batches"]
            busy = after["busy_seconds"] - before["busy_seconds"]
            results[mode] = responses
            rows.append((mode, wall, latencies, batches, busy, load, os.getloadavg()[0]))
        print()
        print("| clients | requests | wall s | requests/s | source words/s | p50 latency ms | p95 latency ms "
              "| batches (requests per batch) | restoring s | load average |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for mode, wall, latencies, batches, busy, load_before, load_after in rows:
            print(f"| {mode} | {len(texts)} | {wall:.1f} | {len(texts) / wall:.2f} | {words / wall:.0f} | "
                  f"{1000 * percentile(latencies, 50):.0f} | {1000 * percentile(latencies, 95):.0f} | "
                  f"{batches} ({len(texts) / batches:.1f}) | {busy:.1f} | {load_before:.1f} -> {load_after:.1f} |")  # fmt: skip
        speedup = rows[0][1] / rows[1][1]
        print(f"\nthroughput: {speedup:.2f}x one request at a time")
        alone, together = results["one at a time"], results[rows[1][0]]
        lost = sum(r is None for r in together) + sum(r is None for r in alone)
        mixed = sum(r is not None and r["tokens"] != text.split() for r, text in zip(together, texts))
        differ = sum(a is not None and b is not None and a != b for a, b in zip(alone, together))
        print(f"checked: {len(texts)} concurrent responses against restoring each text alone: {lost} lost, "
              f"{mixed} answering another request, {differ} different")  # fmt: skip
        int8 = " int8" in engine
        if differ and int8:  # measured: float32 gives the same outputs in any batch, int8 not always
            print("(CTranslate2's int8 products depend on the batch's shape: a batch can change a restoration "
                  "a little; with --compute-type float32 none may differ)")  # fmt: skip
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=600)
        print(f"server: exit status {code}; {process.stderr.read().strip().splitlines()[0]}")
    print(f"total run time {time.perf_counter() - started:.0f} s; {machine_line().split('; ')[-2]} at the end")
    return 1 if lost or mixed or (differ and not int8) else 0


if __name__ == "__main__":
    sys.exit(main())
