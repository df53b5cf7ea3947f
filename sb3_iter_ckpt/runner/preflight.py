"""Before any window trains: does the env keep the contract, and does the algorithm fit it?

:func:`preflight` builds the env as a window would on the first window's train part, resets it and steps
it a few times with sampled actions (seeded), reading each step with the run's ``StepReader``; with a test
part, the reader must read a position (a forward result records one per step), and with the user's
``make_env`` the env runs over the first test part's forward segment to its end and its steps are counted
against the rows; with the default ``make_model``, it builds the algorithm with its policy on the env (SB3
checks the spaces there) and takes one step with it as an evaluation does (a ``Dict`` observation, a
recurrent policy's state). Every refusal is one ``EnvContractError`` line; nothing is written.
"""

from __future__ import annotations

from typing import Any

from sb3_iter_ckpt.common.candidates import policy_name
from sb3_iter_ckpt.common.options import name_of
from sb3_iter_ckpt.errors import CheckpointError, EnvContractError
from sb3_iter_ckpt.runner.window import WindowSpec, _make_env, build_model

__all__ = ["preflight"]

#: Steps taken on the train part's env (the test part's env runs to its end).
PREFLIGHT_STEPS = 5


def _who(spec: WindowSpec) -> str:
    make_env = spec.options.make_env
    return "the built-in TradingEnv" if make_env is None else f"the env of make_env {name_of(make_env)}"


def _build(spec: WindowSpec, segment: Any, part: str) -> Any:
    try:
        return _make_env(spec, segment)
    except CheckpointError:
        raise
    except Exception as exc:  # the user's code: any failure is refused on one line
        raise EnvContractError(f"{_who(spec)} cannot be built on the first window's {part}: {exc!r}") from exc


def _walk(spec: WindowSpec, env: Any, part: str, max_steps: int) -> int:
    """Reset and step ``env`` with sampled actions, each step read; the number of steps until it ended
    (``max_steps`` + 1 when it had not ended by then)."""
    reader = spec.options.reader
    try:
        _, info = env.reset(seed=spec.seed)
        equity = reader.initial_equity(info)
        env.action_space.seed(spec.seed)
        for n in range(1, max_steps + 2):
            _, _, terminated, truncated, info = env.step(env.action_space.sample())
            equity = reader.read(info, equity).equity
            if terminated or truncated:
                return n
    except EnvContractError as exc:
        raise EnvContractError(f"{_who(spec)} on the first window's {part}: {exc}") from None
    except Exception as exc:  # the user's code (an object without reset/step included): one line
        line = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise EnvContractError(f"{_who(spec)} failed its reset or step on the first window's {part}: {line}") from exc
    return max_steps + 1


def _check_test_part(spec: WindowSpec) -> None:
    """The env over the first test part's forward segment takes one step per dated row."""
    w, history = spec.window, spec.options.history
    if spec.test_prices is None or w is None or w.test_start is None or w.test_stop is None:
        return
    if w.test_start < history:
        raise EnvContractError(
            f"the first test part starts at row {w.test_start}, before the {history} rows of history the env "
            "needs (env_history); make the train and validation parts longer"
        )
    rows = len(spec.test_prices) - history - 1  # the rows whose returns are dated (see forward.inputs)
    steps = _walk(spec, _build(spec, spec.test_prices, "test part"), "test part", rows)
    if steps != rows:
        took = f"more than {rows}" if steps > rows else str(steps)
        raise EnvContractError(
            f"{_who(spec)} took {took} steps over the first test part, which has {rows} rows to trade after "
            f"{history} rows of history: one step per row is needed to date its returns (set env_history)"
        )


def _check_position(spec: WindowSpec) -> None:
    """A run with test parts records the position of every forward step: its reader must read one."""
    reader, w = spec.options.reader, spec.window
    if spec.test_prices is None or w is None or w.test_start is None or reader.position_key is not None:
        return
    raise EnvContractError(
        f"the StepReader ({reader.describe()}) reads no position, and a run with test parts records the "
        f"position of {_who(spec)} on every forward step: give the StepReader a position_key (with "
        "position_map for positions that are not numbers), or run without test parts"
    )


def _check_algorithm(spec: WindowSpec, env: Any) -> None:
    opts = spec.options
    if opts.make_model is not None or spec.warm_start_from is not None:
        return
    from stable_baselines3.common.env_util import make_vec_env

    from sb3_iter_ckpt.envs.episode import predictor

    venv = make_vec_env(lambda: env, n_envs=1, seed=spec.seed)
    try:
        model = build_model(opts, venv, spec.seed)
        # One step as every evaluation takes it (run_episode): a policy that cannot act on the env's
        # observations (a Dict, a recurrent state) is refused here, not after a window has trained.
        venv.step(predictor(model)(venv.reset(), True))
    except (AssertionError, ValueError, NotImplementedError, KeyError, RuntimeError) as exc:
        line = " ".join(str(exc).split())
        policy = "" if opts.policy is None else f" with policy {policy_name(opts.policy)}"
        raise EnvContractError(
            f"{opts.algo}{policy} does not fit {_who(spec)} (action space {env.action_space}, observation space "
            f"{env.observation_space}): {line}"
        ) from exc
    finally:
        venv.close()


def preflight(spec: WindowSpec) -> None:
    """Refuse, before anything trains or is written, an env or algorithm the run cannot use.

    :param spec: the first window's unit of work (its parts, the run's options).
    :raises EnvContractError: naming the problem in one line.
    """
    _check_position(spec)
    env = _build(spec, spec.train_prices, "train part")
    _walk(spec, env, "train part", PREFLIGHT_STEPS)
    if spec.options.make_env is not None:
        _check_test_part(spec)
    _check_algorithm(spec, _build(spec, spec.train_prices, "train part"))
