"""Every verb of the CLI, with every kind of argument a user can get wrong, as a real subprocess.

Each case must end with the documented exit code (0 ok, 1 error, 2 bad usage, 3 not found, 4 integrity
problem, 5 configuration mismatch) and a one-line ``sb3-iter-ckpt...`` message on stderr, never a
traceback. Object storage runs against moto on 127.0.0.1 with missing and with wrong credentials.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sb3_iter_ckpt import CheckpointRepository

DOCUMENTED = {0, 1, 2, 3, 4, 5}
READ_VERBS = ["list", "show", "best", "analyze", "verify", "summary", "prune", "adopt", "plot", "forward"]
# What each verb needs besides its repository to be a valid call.
VERB_ARGS = {
    "list": [],
    "show": ["0"],
    "best": [],
    "analyze": [],
    "verify": [],
    "summary": [],
    "prune": ["--keep-last-n", "1", "--dry-run"],
    "adopt": [],
    "plot": ["--out", "OUT/plot.png"],
    "forward": [],
}
WALK = ["walk-forward", "--experiment-id", "wf", "--total-timesteps", "64", "--iterations", "1"]
WALK += ["--train-size", "100", "--val-size", "50", "--n-prices", "300"]


def _cli(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sb3_iter_ckpt.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def _problems(cases: list[tuple[list[str], int]], cwd: Path, env: dict[str, str] | None = None) -> list[str]:
    """Run every case (a few at a time); describe each one that ends otherwise than expected."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda case: _cli(case[0], cwd, env), cases))
    problems = []
    for (args, expected), r in zip(cases, results, strict=True):
        lines = r.stderr.strip().splitlines()
        last = lines[-1] if lines else ""
        if "Traceback" in r.stderr:
            problems.append(f"{args}: traceback:\n{r.stderr}")
        elif r.returncode not in DOCUMENTED:
            problems.append(f"{args}: undocumented exit code {r.returncode}: {last}")
        elif r.returncode != expected:
            problems.append(f"{args}: exit {r.returncode}, expected {expected}: {last}")
        elif expected != 0 and not last.startswith("sb3-iter-ckpt"):
            problems.append(f"{args}: no one-line sb3-iter-ckpt message on stderr: {r.stderr!r}")
    return problems


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """A healthy repository (3 iterations), a plain file, a missing path and a folder for outputs."""
    from stable_baselines3 import PPO

    base = tmp_path_factory.mktemp("cli-errors")
    buf = io.BytesIO()
    PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, device="cpu").save(buf)
    repo = CheckpointRepository(base / "repo")
    for i, score in enumerate([1.0, 3.0, 2.0]):
        repo.commit(
            i, metrics={"mean_reward": score}, model=buf.getvalue(), extra={"algorithm": "stable_baselines3.PPO"}
        )
    repo.refresh()
    (base / "afile").write_text("not a repository\n")
    (base / "empty.csv").write_text("")
    (base / "iso.csv").write_text("date,close\n" + "".join(f"2020-01-{d:02d},{100 + d}\n" for d in range(1, 29)))
    (base / "out").mkdir()
    return {"base": base, "repo": str(base / "repo"), "file": str(base / "afile"), "missing": str(base / "nope")}


def _with_out(args: list[str], base: Path) -> list[str]:
    return [a.replace("OUT", str(base / "out")) for a in args]


def test_every_read_verb_with_every_bad_repository(places):
    base = places["base"]
    cases: list[tuple[list[str], int]] = []
    for verb in READ_VERBS:
        extra = _with_out(VERB_ARGS[verb], base)
        cases += [
            ([verb, places["missing"], *extra], 3),  # a missing root
            ([verb, places["file"], *extra], 3),  # a file as root
            ([verb, "", *extra], 2),  # an empty path
            ([verb, *extra], 2),  # no repository at all
            ([verb, "foo://bucket/x", *extra], 2),  # an unknown URL scheme
            ([verb, places["repo"], "--storage-option", "a=1", *extra], 2),  # a URL option on a local folder
            ([verb, "s3://bucket/x", "--storage-option", "novalue", *extra], 2),  # not KEY=VALUE
            ([verb, places["repo"], "--no-such-option", *extra], 2),
            ([verb, "--experiment-id", "nope", "--results-dir", places["file"], *extra], 3),
        ]
    assert _problems(cases, base) == []


def test_every_verb_with_bad_values(places):
    base, repo = places["base"], places["repo"]
    out = str(base / "out")
    cases: list[tuple[list[str], int]] = [
        (["list", repo], 0),  # the control: a good call
        (["show", repo, "-1"], 2),
        (["show", repo, "x"], 2),
        (["show", repo, "1.5"], 2),
        (["show", repo, "99"], 3),
        (["show", repo], 2),
        (["best", repo, "--mode", "best"], 2),
        (["best", repo, "--monitor", "no.such.metric"], 3),
        (["analyze", repo, "--top-k", "0"], 2),
        (["analyze", repo, "--top-k", "-3"], 2),
        (["analyze", repo, "--top-k", "many"], 2),
        (["analyze", repo, "--mode", "up"], 2),
        (["summary", repo, "--mode", "up"], 2),
        (["prune", repo], 2),
        (["prune", repo, "--keep-last-n", "0"], 2),
        (["prune", repo, "--keep-every-n", "-1"], 2),
        (["prune", repo, "--keep-best-k", "two"], 2),
        (["prune", repo, "--keep-last-n", "1", "--mode", "sideways", "--dry-run"], 2),
        (["plot", repo], 2),  # --out is required
        (["plot", repo, "--out", f"{out}/x.xyz"], 2),  # an unknown image format
        (["plot", repo, "--out", f"{out}/noformat"], 2),
        (["plot", repo, "--out", out], 2),  # a folder
        (["plot", repo, "--out", f"{places['file']}/x.png"], 2),  # under a file
        (["plot", repo, "--out", f"{out}/x.png", "--metric", "no.such.metric"], 3),
        (["plot", repo, "--out", f"{out}/x.png", "--mode", "up"], 2),
        (["forward", repo], 3),  # a repository without forward data
        (["forward", repo, "--json"], 3),
        (["forward", repo, "--mode", "max"], 2),
        (["report", repo, "--out", out], 2),  # a folder
        (["report", repo, "--out", f"{places['file']}/x.html"], 2),  # under a file
        (["report", repo, "--out", "/proc/x.html"], 2),  # a folder nobody can create files in
        (["no-such-verb", repo], 2),
        ([], 2),
    ]
    assert _problems(cases, base) == []
    assert sorted(p.name for p in (base / "out").iterdir()) == [], "no bad call wrote an image"


def test_walk_forward_bad_arguments_fail_before_training(places):
    base = places["base"]
    results = str(base / "wf-results")
    walk = [*WALK, "--results-dir", results]
    cases: list[tuple[list[str], int]] = [
        ([*walk, "--gap", "-5"], 2),
        ([*walk, "--n-steps", "1"], 2),
        ([*walk, "--n-steps", "0"], 2),
        ([*walk, "--threads", "0"], 2),
        ([*walk, "--threads", "-1"], 2),
        ([*walk, "--seed", "-1"], 2),
        ([*walk, "--data-seed", "-1"], 2),
        ([*walk, "--total-timesteps", "0"], 2),
        ([*walk, "--total-timesteps", "lots"], 2),
        ([*walk, "--iterations", "-2"], 2),
        ([*walk, "--train-size", "1e3"], 2),
        ([*walk, "--eval-freq", "0"], 2),
        ([*walk, "--algo", "nope"], 2),
        ([*walk, "--algo", "no.such.Module"], 2),
        ([*walk, "--algo", "ppo,ppo"], 2),  # two candidates with one name
        ([*walk, "--algo", "ppo,PPO"], 2),
        ([*walk, "--algo", "ppo,"], 2),
        ([*walk, "--algo", "ppo,nope"], 2),
        ([*walk, "--seeds", "0"], 2),
        ([*walk, "--algo", "a2c,ppo", "--n-steps", "1"], 2),  # PPO among the candidates
        ([*walk, "--monitor", "validation.nope"], 2),
        ([*walk, "--window-mode", "sliding"], 2),
        ([*walk, "--executor", "cluster"], 2),
        ([*walk, "--executor", "sequential", "--workers", "2"], 2),  # workers need auto, process or ray
        ([*walk, "--ray-address", "auto"], 2),
        ([*walk, "--data", str(base / "missing.csv")], 2),
        ([*walk, "--data", str(base / "empty.csv")], 2),
        ([*walk, "--data", str(base / "out")], 2),  # a folder
        ([*walk, "--results-dir", places["file"]], 2),
        ([*walk, "--results-dir", "foo://bucket/x"], 2),
        ([*walk, "--storage-option", "a=1"], 2),  # on a local results folder
        ([*walk, "--train-size", "10000"], 2),  # no window fits in the data
        ([*walk, "--test-size", "-1"], 2),
        ([*walk, "--test-size", "half"], 2),
        ([*walk, "--test-size", "10000"], 2),  # a test part longer than the data
        ([*walk, "--test-size", "0", "--test-gap", "5"], 2),  # a gap before no test part
        ([*walk, "--test-gap", "-1"], 2),
        ([*walk, "--periods-per-year", "0"], 2),
        ([*walk, "--periods-per-year", "-252"], 2),
        ([*walk, "--periods-per-year", "nan"], 2),
        ([*walk, "--periods-per-year", "inf"], 2),
        ([*walk, "--periods-per-year", "daily"], 2),
        ([*walk, "--date-format", "%d.%m.%Y"], 2),  # no --data to read
        ([*walk, "--data", str(base / "iso.csv"), "--date-format", "%d.%m.%Y"], 2),  # dates not in that format
        (["walk-forward", "--total-timesteps", "64"], 2),  # no --experiment-id
    ]
    assert _problems(cases, base) == []
    ck = Path(results) / "wf" / "checkpoints"
    assert not ck.exists() or not any(ck.iterdir()), "nothing was trained or committed"


# -- object storage without, or with wrong, credentials -----------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto_with_auth(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 that checks credentials (INITIAL_NO_AUTH_ACTION_COUNT=0)."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server", reason="needs moto[server]")
    port = _free_port()
    code = (
        "import time; from moto.server import ThreadedMotoServer; "
        f"s = ThreadedMotoServer(ip_address='127.0.0.1', port={port}, verbose=False); s.start(); time.sleep(3600)"
    )
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="0")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto did not start: {proc.stderr.read() if proc.stderr else ''}") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def _aws_env(endpoint: str, tmp: Path, credentials: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "SB3_ITER_CKPT_STORAGE_OPTIONS"}
    env.update(
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=str(tmp / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp / "no-credentials"),
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
        **credentials,
    )
    return env


@pytest.mark.parametrize(
    "credentials",
    [{}, {"AWS_ACCESS_KEY_ID": "wrong", "AWS_SECRET_ACCESS_KEY": "wrong"}],
    ids=["missing-credentials", "wrong-credentials"],
)
def test_every_verb_on_object_storage_without_valid_credentials(places, moto_with_auth, credentials, tmp_path):
    env = _aws_env(moto_with_auth, tmp_path, credentials)
    url = "s3://bucket/experiment"
    cases = [([verb, url, *_with_out(VERB_ARGS[verb], places["base"])], 1) for verb in READ_VERBS]
    cases += [([*WALK, "--results-dir", "s3://bucket/results"], 1)]
    cases += [(["list", url, "--storage-option", "endpoint_url=not a url"], 2)]
    assert _problems(cases, places["base"], env) == []
