"""Broker stress: several producer processes and Celery worker processes move N messages
through the broker; counts the messages processed, missing and processed twice, the worker
crashes, and the bad files set aside; prints messages per second and latency percentiles.

    .venv/bin/python bench/broker_stress.py                        # default broker, 20,000
    .venv/bin/python bench/broker_stress.py --messages 2000 --kill # SIGKILL a worker mid-run
    .venv/bin/python bench/broker_stress.py --broker kombu-filesystem   # kombu's own, before
    REDIS_URL=redis://127.0.0.1:6379/14 .venv/bin/python bench/broker_stress.py --broker redis
    REDIS_URL=redis://127.0.0.1:6379/14 .venv/bin/python bench/broker_stress.py --compare \
        --messages 5000                                            # each broker in turn

What runs:
* ``--workers`` real ``celery -A portal worker`` processes with the portal's settings and a
  throwaway ``PORTAL_VAR_DIR`` (so the broker is the one ``make run`` uses, in a temporary
  folder), running one task that appends "N sent done" to a file of its process;
* ``--producers`` processes publishing N messages between them with ``send_task`` while the
  workers consume (the race that killed the worker in issue 18);
* ``--bad`` files that are not messages (one empty, the others not JSON) dropped into the
  queue folder during the run: they must be set aside and logged, and kill nothing;
* with ``--kill``, the first worker is sent SIGKILL once a third of the messages are done
  and a new worker is started in its place, as ``make run``'s supervisor does; the messages
  the dead worker held must come back (at least once: a few may run twice). With
  ``--task-ms`` (each task sleeps) the workers fall behind, so the killed one surely holds
  messages.

The worker shape is ``make run``'s (prefork, 2 processes, prefetch 1) unless told otherwise.

It exits 1 when a message is missing, one ran twice without ``--kill``, a process crashed,
or a bad file was not set aside.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import ROOT, load, machine, percentile, table  # noqa: E402 - after the path

BENCH = Path(__file__).resolve().parent
BROKERS = ("default", "kombu-filesystem", "redis")


@dataclass
class Options:
    messages: int = 20_000
    producers: int = 4
    workers: int = 2
    pool: str = "prefork"
    concurrency: int = 2
    prefetch: int = 1
    broker: str = "default"
    redis_url: str = ""
    bad: int = 3
    kill: bool = False
    task_ms: float = 0.0
    timeout: float = 600.0


@dataclass
class Result:
    options: Options
    processed: int = 0
    missing: int = 0
    duplicated: int = 0
    runs: int = 0
    seconds: float = 0.0
    publish_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    crashed: list[str] = field(default_factory=list)
    producer_failures: list[str] = field(default_factory=list)
    bad_injected: int = 0
    bad_set_aside: int = 0
    bad_logged: int = 0
    killed: int = 0
    restored_logged: int = 0
    timed_out: bool = False

    @property
    def rate(self) -> float:
        return self.processed / self.seconds if self.seconds else 0.0

    @property
    def ok(self) -> bool:
        return (
            not self.timed_out
            and self.missing == 0
            and (self.options.kill or self.duplicated == 0)
            and not self.crashed
            and not self.producer_failures
            and self.bad_set_aside == self.bad_injected
        )


def _env(tmp: Path, opts: Options) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"REDIS_URL", "DATABASE_URL", "BROKER_STRESS_KOMBU_FILESYSTEM"}
    }
    env.update(
        PORTAL_VAR_DIR=str(tmp / "var"),
        BROKER_STRESS_RESULTS=str(tmp / "results"),
        DJANGO_SETTINGS_MODULE="portal.settings",
        PYTHONPATH=os.pathsep.join([str(BENCH), str(ROOT)]),
        PYTHONUNBUFFERED="1",
        BROKER_STRESS_TASK_SECONDS=str(opts.task_ms / 1000),
    )
    if opts.broker == "redis":
        env["REDIS_URL"] = opts.redis_url
    if opts.broker == "kombu-filesystem":
        env["BROKER_STRESS_KOMBU_FILESYSTEM"] = "1"
    return env


class Worker:
    def __init__(self, index: int, env: dict, tmp: Path, opts: Options) -> None:
        self.log = tmp / f"worker{index}.log"
        self.proc = subprocess.Popen(  # noqa: S603 - our interpreter, celery's module
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "portal",
                "worker",
                "--include",
                "_broker_stress_task",
                "--pool",
                opts.pool,
                "--concurrency",
                str(opts.concurrency),
                "--prefetch-multiplier",
                str(opts.prefetch),
                "--loglevel",
                "INFO",
                "--hostname",
                f"stress{index}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, deadline: float) -> None:
        while "ready." not in self.text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"a worker did not start:\n{self.text()[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # prefork children of a killed main process: end the whole session
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def _read_results(folder: Path, offsets: dict[Path, int], seen: Counter, done: dict) -> None:
    for path in folder.glob("*.log"):
        with path.open("rb") as f:
            f.seek(offsets.get(path, 0))
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
        offsets[path] = offsets.get(path, 0) + end
        for line in data[:end].decode().splitlines():
            n, sent, finished = line.split()
            seen[int(n)] += 1
            done.setdefault(int(n), (float(sent), float(finished)))


def _queue_folder(tmp: Path, opts: Options) -> Path:
    return tmp / "var" / "broker" / "queue"


def _inject_bad(tmp: Path, opts: Options, count: int) -> int:
    folder = _queue_folder(tmp, opts)
    for i in range(count):
        content = b"" if i == 0 else b"{not json " + str(i).encode()
        if opts.broker == "kombu-filesystem":
            name = folder / f"{i:013d}_bad-{i}.celery.msg"
        else:
            (folder / "celery").mkdir(parents=True, exist_ok=True)
            name = folder / "celery" / f"{i:020d}-bad{i}.msg"
        name.write_bytes(content)
    return count


def run(opts: Options, progress=print) -> Result:
    result = Result(opts)
    tmp = Path(tempfile.mkdtemp(prefix="broker-stress-"))
    (tmp / "results").mkdir()
    env = _env(tmp, opts)
    workers: list[Worker] = []
    producers: list[subprocess.Popen] = []
    try:
        if opts.broker == "redis":
            import redis

            redis.Redis.from_url(opts.redis_url).flushdb()
        deadline = time.monotonic() + 120
        workers = [Worker(i + 1, env, tmp, opts) for i in range(opts.workers)]
        for w in workers:
            w.wait_ready(deadline)
        progress(f"{opts.workers} workers ready; {opts.producers} producers start")

        share = -(-opts.messages // opts.producers)
        started = time.time()
        for p in range(opts.producers):
            first, count = p * share, min(share, opts.messages - p * share)
            producers.append(
                subprocess.Popen(  # noqa: S603 - this script
                    [sys.executable, __file__, "--produce", str(first), str(count)],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=(tmp / f"producer{p + 1}.log").open("wb"),
                )
            )

        seen: Counter = Counter()
        done: dict[int, tuple[float, float]] = {}
        offsets: dict[Path, int] = {}
        limit = time.monotonic() + opts.timeout
        published_at = None
        last_report = time.monotonic()
        while True:
            time.sleep(0.25)
            _read_results(tmp / "results", offsets, seen, done)
            if (
                not result.bad_injected
                and opts.bad
                and opts.broker != "redis"  # (no files to break there)
                and len(done) >= opts.messages // 10
            ):
                result.bad_injected = _inject_bad(tmp, opts, opts.bad)
            if opts.kill and not result.killed and len(done) >= opts.messages // 3:
                victim = workers[0]
                os.kill(victim.proc.pid, signal.SIGKILL)
                victim.proc.wait()
                result.killed = 1
                progress(f"SIGKILL worker 1 (pid {victim.proc.pid}) at {len(done):,} done")
                workers.append(Worker(len(workers) + 1, env, tmp, opts))
            if published_at is None and all(p.poll() is not None for p in producers):
                published_at = time.time()
            for i, w in enumerate(workers):
                if w.proc.poll() is not None and not (opts.kill and i == 0):
                    name = f"worker{i + 1} exited {w.proc.returncode}"
                    if name not in result.crashed:
                        result.crashed.append(name)
            if len(done) >= opts.messages and published_at is not None:
                break
            if all(w.proc.poll() is not None for w in workers):
                break
            if time.monotonic() > limit:
                result.timed_out = True
                break
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                progress(f"  {len(done):,} of {opts.messages:,} done")
        finished = time.time()
        time.sleep(2)  # a message run twice shows up late
        _read_results(tmp / "results", offsets, seen, done)

        for i, p in enumerate(producers):
            p.wait(60)
            if p.returncode:
                log = (tmp / f"producer{i + 1}.log").read_text(errors="replace")
                result.producer_failures.append(log[-2000:])
        result.processed = len(done)
        result.missing = opts.messages - len([n for n in done if 0 <= n < opts.messages])
        result.duplicated = sum(1 for c in seen.values() if c > 1)
        result.runs = sum(seen.values())
        last = max((f for _, f in done.values()), default=finished)
        result.seconds = last - started
        result.publish_seconds = (published_at or finished) - started
        result.latencies = [f - s for s, f in done.values()]
        for i, w in enumerate(workers):
            text = w.text()
            if "Unrecoverable error" in text:
                label = f"worker{i + 1}: Unrecoverable error"
                result.crashed.append(label)
            result.bad_logged += text.count("which is not a message")
            result.restored_logged += text.count("of stopped consumer")
        bad_folder = tmp / "var" / "broker" / "work" / "bad"
        if bad_folder.exists():
            result.bad_set_aside = len(list(bad_folder.iterdir()))
        return result
    finally:
        for w in workers:
            w.stop()
        for p in producers:
            if p.poll() is None:
                p.kill()
        if result.crashed or result.timed_out:
            for i, w in enumerate(workers):
                progress(f"--- worker{i + 1}.log (last lines)\n{w.text()[-2500:]}")
        shutil.rmtree(tmp, ignore_errors=True)


def report(result: Result) -> str:
    o = result.options
    lat = result.latencies
    rows = [
        ["broker", o.broker, "portal/broker.py" if o.broker == "default" else ""],
        ["messages", f"{o.messages:,}", f"{o.producers} producer processes"],
        [
            "workers",
            str(o.workers),
            f"{o.pool} x {o.concurrency}, prefetch x {o.prefetch}, tasks of {o.task_ms:g} ms",
        ],
        ["processed", f"{result.processed:,}", f"{result.runs:,} task runs"],
        ["missing", str(result.missing), ""],
        ["processed twice", str(result.duplicated), "SIGKILL: at least once" if o.kill else ""],
        ["crashes", str(len(result.crashed)), "; ".join(result.crashed)],
        ["producer failures", str(len(result.producer_failures)), ""],
        ["bad files set aside", f"{result.bad_set_aside} of {result.bad_injected}", ""],
        ["bad files logged", str(result.bad_logged), ""],
        ["workers killed", str(result.killed), f"{result.restored_logged} restore logs"],
        ["messages / s", f"{result.rate:,.0f}", "first publish to last done"],
        [
            "publish / s",
            f"{o.messages / result.publish_seconds:,.0f}" if result.publish_seconds else "-",
            "all producers together",
        ],
        ["latency p50", f"{percentile(lat, 50) * 1000:,.0f} ms", "publish to task done"],
        ["latency p95", f"{percentile(lat, 95) * 1000:,.0f} ms", ""],
        ["latency p99", f"{percentile(lat, 99) * 1000:,.0f} ms", ""],
        ["latency max", f"{max(lat, default=0) * 1000:,.0f} ms", ""],
    ]
    verdict = "PASS" if result.ok else "FAIL"
    if result.timed_out:
        verdict += " (timed out)"
    return (
        f"Broker stress on {machine()}; load before: {load()}\n"
        + table(["measure", "value", "note"], rows)
        + f"\n{verdict}: every message processed, none twice"
        + (" (beyond the killed worker's)" if o.kill else "")
        + ", no crash, bad files set aside"
    )


def compare(messages: int, redis_url: str, progress) -> str:
    """The same load through each broker, one after the other, in one run: plain, with 3
    bad files, and with a worker killed (tasks of 50 ms, so it holds messages)."""
    brokers = ["default", "kombu-filesystem"] + (["redis"] if redis_url else [])
    scenarios = []
    for broker in brokers:
        scenarios.append((broker, "plain", Options(messages=messages, broker=broker, bad=0)))
        if broker != "redis":
            scenarios.append((broker, "3 bad files", Options(messages=messages, broker=broker)))
        scenarios.append(
            (
                broker,
                "SIGKILL a worker",
                Options(messages=1000, broker=broker, bad=0, kill=True, task_ms=50, timeout=90),
            )
        )
    rows, base = [], {}
    for broker, scenario, opts in scenarios:
        opts.redis_url = redis_url
        progress(f"== {broker}: {scenario}")
        r = run(opts, progress=lambda _s: None)
        if broker == "default":
            base[scenario] = r.rate
        ratio = r.rate / base[scenario] if base.get(scenario) else float("nan")
        rows.append(
            [
                broker,
                scenario,
                f"{r.processed:,} / {opts.messages:,}",
                str(r.duplicated),
                str(len([c for c in r.crashed if "exited" in c])),
                f"{r.rate:,.0f}",
                f"{ratio:.2f}",
                f"{percentile(r.latencies, 50) * 1000:,.0f}",
                f"{percentile(r.latencies, 95) * 1000:,.0f}",
                "timed out" if r.timed_out else "",
            ]
        )
    return (
        f"Broker comparison on {machine()}; load before: {load()}; 4 producers, 2 workers "
        "(prefork x 2, prefetch 1)\n"
        + table(
            [
                "broker",
                "scenario",
                "processed",
                "twice",
                "workers died",
                "msg/s",
                "/ default",
                "p50 ms",
                "p95 ms",
                "",
            ],
            rows,
        )
    )


def _produce(first: int, count: int) -> None:
    import django

    django.setup()
    import _broker_stress_task  # noqa: F401 - the comparison's transport switch

    from portal.celery import app

    for n in range(first, first + count):
        app.send_task("broker_stress.record", args=[n, time.time()])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--produce"]:
        _produce(int(argv[1]), int(argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    d = Options()
    parser.add_argument("--messages", type=int, default=d.messages)
    parser.add_argument("--producers", type=int, default=d.producers)
    parser.add_argument("--workers", type=int, default=d.workers)
    parser.add_argument("--pool", choices=["prefork", "threads", "solo"], default=d.pool)
    parser.add_argument("--concurrency", type=int, default=d.concurrency)
    parser.add_argument("--prefetch", type=int, default=d.prefetch, help="prefetch multiplier")
    parser.add_argument("--broker", choices=BROKERS, default=d.broker)
    parser.add_argument("--bad", type=int, default=d.bad, help="bad files to drop in the queue")
    parser.add_argument("--kill", action="store_true", help="SIGKILL a worker mid-run")
    parser.add_argument("--task-ms", type=float, default=d.task_ms, help="each task sleeps")
    parser.add_argument("--timeout", type=float, default=d.timeout)
    parser.add_argument(
        "--compare", action="store_true", help="each broker in turn (with REDIS_URL: Redis too)"
    )
    args = parser.parse_args(argv)
    if min(args.messages, args.producers, args.workers, args.concurrency, args.prefetch) < 1:
        parser.error("--messages, --producers, --workers, --concurrency, --prefetch: >= 1")
    redis_url = os.environ.get("REDIS_URL", "")
    if args.broker == "redis" and not redis_url:
        parser.error("--broker redis needs REDIS_URL (a database of its own: it is flushed)")
    if args.compare:
        print(compare(args.messages, redis_url, progress=lambda s: print(s, flush=True)))
        return 0
    opts = Options(**{k: v for k, v in vars(args).items() if k != "compare"}, redis_url=redis_url)
    result = run(opts, progress=lambda s: print(s, flush=True))
    print(report(result))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
