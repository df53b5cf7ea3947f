"""Helpers shared by the benchmark scripts: isolation, timing (medians of interleaved repeats), tables."""

from __future__ import annotations

import argparse
import atexit
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Nothing of a benchmark run may land outside its temporary folder (SB3 writes /tmp/SB3-<date> otherwise).
_TMP = Path(tempfile.mkdtemp(prefix="sb3-iter-ckpt-bench-"))
atexit.register(lambda: shutil.rmtree(_TMP, ignore_errors=True))  # every importing process, workers included
os.environ.setdefault("SB3_LOGDIR", str(_TMP / "sb3log"))
os.environ.pop("SB3_ITER_CKPT_SIGNING_KEY", None)
warnings.filterwarnings("ignore")


def tmpdir(name: str) -> Path:
    """A fresh folder inside this run's temporary folder (removed at exit by ``cleanup``)."""
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=_TMP))
    return path


def cleanup() -> None:
    shutil.rmtree(_TMP, ignore_errors=True)


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test (CI), not a measurement")
    p.add_argument("--repeats", type=int, default=None, help="repeats per variant (median reported)")
    return p


def setup_torch() -> None:
    import torch

    torch.set_num_threads(1)  # tiny MLPs: threads cost more than they give; also fewer noisy neighbours


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(variants: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run the variants round-robin ``repeats`` times (after ``warmup`` untimed rounds): noise hits all alike."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    out: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            out[name].append(timed(fn))
    return out


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def spread(xs: Sequence[float]) -> str:
    """Median and the interquartile range, as text."""
    if len(xs) < 4:
        return f"{statistics.median(xs) * 1e3:.2f}"
    q = statistics.quantiles(xs, n=4)
    return f"{q[1] * 1e3:.2f} ({q[0] * 1e3:.2f}-{q[2] * 1e3:.2f})"


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Print (and return) a Markdown table under a ``### title`` line."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
        return str(v)

    lines = [f"### {title}", "", "| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    text = "\n".join(lines)
    print(text + "\n", flush=True)
    return text


def goal(name: str, met: bool, detail: str) -> None:
    print(f"GOAL {name}: {'MET' if met else 'MISSED'} ({detail})", flush=True)


def machine() -> str:
    import stable_baselines3
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"torch {torch.__version__} (threads=1), SB3 {stable_baselines3.__version__}, tmp on {_TMP.parent}"
    )


def header(name: str, args: argparse.Namespace) -> None:
    print(f"## {name}{' (--quick: smoke test, not a measurement)' if args.quick else ''}")
    print(f"machine: {machine()}")
    print(f"command: python {' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}\n", flush=True)


def fsync_write(path: Path, data: bytes) -> None:
    """A plain write + fsync of the file + fsync of its folder: what the disk does at best."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def disk_bytes(folder: Path) -> tuple[int, int]:
    """(apparent bytes, allocated bytes) under ``folder``, hard links counted once."""
    seen: set[tuple[int, int]] = set()
    apparent = allocated = 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return apparent, allocated


def sample_models(quick: bool) -> dict[str, Any]:
    """The models the improvement and commit benchmarks measure: small PPO and SAC, and a 25 MB PPO."""
    from stable_baselines3 import PPO, SAC

    models: dict[str, Any] = {
        "PPO MLP (CartPole)": PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, device="cpu", seed=0),
        "SAC MLP (Pendulum)": SAC(
            "MlpPolicy", "Pendulum-v1", buffer_size=1000, learning_starts=32, device="cpu", seed=0
        ),
    }
    if not quick:
        models["PPO MLP 2x1024 (CartPole)"] = PPO(
            "MlpPolicy",
            "CartPole-v1",
            n_steps=64,
            batch_size=64,
            device="cpu",
            seed=0,
            policy_kwargs=dict(net_arch=[1024, 1024]),
        )
    return models
