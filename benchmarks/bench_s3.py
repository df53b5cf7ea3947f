# ruff: noqa: B023  (closures are called within their loop iteration)
"""7. Commit cost on S3 (moto over loopback) against a local folder: requests, p50/p95 latency, listing.

The S3 server is moto's ``ThreadedMotoServer`` on 127.0.0.1 (in this process): latencies are what
the client and the protocol cost without a network, a floor for a real endpoint (add one round
trip, ~1-30 ms, per request counted here). Requests are the S3 API calls s3fs makes, by operation.
Needs the ``s3`` extra and ``moto[server]``.
"""

from __future__ import annotations

import collections
import io
import logging
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

BUCKET = "bench"


def start_moto() -> tuple[object, str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    os.environ.update(
        AWS_EC2_METADATA_DISABLED="true",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    return server, endpoint


class Counter:
    """Counts the S3 API calls of one s3fs filesystem object, by operation."""

    def __init__(self, fs) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        original = fs._call_s3

        async def counted(method, *args, **kwargs):
            self.calls[method] += 1
            return await original(method, *args, **kwargs)

        fs._call_s3 = counted

    def take(self) -> collections.Counter[str]:
        out, self.calls = self.calls, collections.Counter()
        return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def main() -> int:
    args = c.parser(__doc__).parse_args()
    c.header("7. Commit cost on S3 (moto over loopback) against local", args)
    c.setup_torch()
    from stable_baselines3 import PPO

    from sb3_iter_ckpt import CheckpointRepository

    n_commits = args.repeats or (20 if args.quick else 200)
    n_listing = 100 if args.quick else 1000
    buf = io.BytesIO()
    PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, device="cpu", seed=0).save(buf)
    model = buf.getvalue()
    server, endpoint = start_moto()
    opts = {"endpoint_url": endpoint, "key": "bench", "secret": "bench", "client_kwargs": {"region_name": "us-east-1"}}
    try:

        def open_repo(kind: str):
            if kind == "local":
                return CheckpointRepository(c.tmpdir("local") / "repo"), None
            repo = CheckpointRepository(
                f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}", storage_options={**opts, "skip_instance_cache": True}
            )
            return repo, Counter(repo.storage.fs)

        rows = []
        per_commit: dict[str, list[float]] = {}
        requests: dict[str, float] = {}
        for kind in ("local", "s3"):
            repo, counter = open_repo(kind)
            times, reqs = [], []
            for i in range(n_commits):
                if counter:
                    counter.take()
                t0 = time.perf_counter()
                repo.commit(i, metrics={"mean_reward": float(i % 7)}, model=model, extra={"versions": {}})
                times.append(time.perf_counter() - t0)
                if counter:
                    reqs.append(sum(counter.take().values()))
            breakdown = ""
            repo.refresh("mean_reward", "max")  # steady state: earlier records already parsed, as in training
            if counter:
                counter.take()
                repo.commit(n_commits, metrics={"mean_reward": 1.0}, model=model, extra={"versions": {}})
                breakdown = ", ".join(f"{k} {v}" for k, v in sorted(counter.take().items()))
                t0 = time.perf_counter()
                repo.refresh("mean_reward", "max")
                refresh_s = time.perf_counter() - t0
                refresh_reqs = sum(counter.take().values())
            else:
                repo.commit(n_commits, metrics={"mean_reward": 1.0}, model=model, extra={"versions": {}})
                t0 = time.perf_counter()
                repo.refresh("mean_reward", "max")
                refresh_s, refresh_reqs = time.perf_counter() - t0, None
            per_commit[kind] = times
            requests[kind] = statistics.mean(reqs) if reqs else 0
            rows.append(
                [
                    kind,
                    f"{len(model) / 1e3:.0f} KB",
                    "-" if not reqs else f"{statistics.mean(reqs):.1f} ({breakdown})",
                    pct(times, 0.5) * 1e3,
                    pct(times, 0.95) * 1e3,
                    refresh_s * 1e3,
                    "-" if refresh_reqs is None else refresh_reqs,
                ]
            )
        c.table(
            f"One commit ({n_commits} commits of a PPO CartPole zip; refresh: after commit {n_commits + 1})",
            ["backend", "model", "requests per commit (by operation)", "p50 ms", "p95 ms", "refresh ms", "refresh req"],
            rows,
        )

        # listing cost at n_listing iterations: records written directly through the repository
        rows = []
        listing_reqs = {}
        for kind in ("local", "s3"):
            repo, counter = open_repo(kind)
            for i in range(n_listing):
                repo.commit(i, metrics={"mean_reward": float(i % 13)}, model=b"m", extra={"versions": {}})
            url = str(repo.root)
            timings = {}
            reqs = {}
            for label, fn in (
                ("open + list (cold: every record read)", None),
                ("list again (warm: records cached)", lambda r: r.list()),
                ("has(i) (local: 3 stats; s3: one listing)", lambda r: r.has(n_listing // 2)),
                ("best()", lambda r: r.best()),
            ):
                if fn is None:
                    t0 = time.perf_counter()
                    if kind == "local":
                        fresh = CheckpointRepository(url)
                    else:
                        fresh = CheckpointRepository(url, storage_options={**opts, "skip_instance_cache": True})
                        cold = Counter(fresh.storage.fs)
                    assert len(fresh.list()) == n_listing
                    timings[label] = time.perf_counter() - t0
                    if kind == "s3":
                        reqs[label] = sum(cold.take().values())
                    continue
                if kind == "s3":
                    cold.take()
                t0 = time.perf_counter()
                fn(fresh)
                timings[label] = time.perf_counter() - t0
                if kind == "s3":
                    reqs[label] = sum(cold.take().values())
            for label, t in timings.items():
                rows.append([kind, label, t * 1e3, reqs.get(label, "-")])
            listing_reqs[kind] = reqs
        c.table(
            f"Listing at {n_listing} iterations (a fresh repository object; ms)",
            ["backend", "operation", "ms", "requests"],
            rows,
        )
        cold_label = "open + list (cold: every record read)"
        ratio = c.median(per_commit["s3"]) / c.median(per_commit["local"])
        warm = listing_reqs["s3"]["list again (warm: records cached)"]
        c.goal(
            "S3 commit requests constant and warm listing needs no record reads",
            requests["s3"] <= 12 and warm <= n_listing // 1000 + 2,
            f"{requests['s3']:.1f} requests per commit; warm list of {n_listing} iterations: {warm} requests, "
            f"cold: {listing_reqs['s3'][cold_label]}; S3 commit p50 {ratio:.1f}x local",
        )
    finally:
        server.stop()
        c.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
