"""The settings of a run, each validated once where its value is built.

* :class:`RunOptions`: one walk-forward run (what is trained and how it is judged). The CLI builds it
  from its flags, ``WalkForwardRunner`` from its keyword arguments; it travels as is, inside each
  ``WindowSpec``, to the worker that trains a window (it is picklable), and gives the resume gate its
  configuration (:meth:`RunOptions.to_config`). A new run setting is one field here (and its key in
  ``to_config`` when it changes what a run produces).
* :class:`EvaluationOptions` and :class:`CommitOptions`: the callback's own settings (when and how it
  evaluates; how it commits), so that ``IterationCheckpointCallback`` checks none of them itself.

Pure: it imports only ``selection``, ``candidates``, ``steps`` and ``errors``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sb3_iter_ckpt.common.candidates import Candidate, check_candidates, check_policy, policy_config
from sb3_iter_ckpt.common.selection import MinScore, SelectionRule
from sb3_iter_ckpt.common.steps import StepReader
from sb3_iter_ckpt.errors import CheckpointError

__all__ = ["ON_ERROR", "CommitOptions", "EvaluationOptions", "RunOptions"]

ON_ERROR = ("warn", "raise")

#: The annualization of prices without dates, and the default ``periods_per_year`` of every version before
#: the runner estimated it from the dates (a run those versions wrote recorded it: it resumes with it).
DEFAULT_PERIODS_PER_YEAR = 252

#: Where a run's ``periods_per_year`` came from (its records' ``metadata.periods_per_year_source``), in words.
PERIODS_PER_YEAR_SOURCES = {
    "given": "given",
    "estimated": "estimated from the prices' dates",
    "assumed": "assumed: the prices have no dates (give periods_per_year, or prices with a DatetimeIndex)",
    "earlier default": "the default of the earlier version that wrote this run, kept so that it resumes",
}

MakeEnv = Callable[[Any, int], Any]
MakeModel = Callable[[Any, int], Any]


#: The package's folders of internals (issue 20) and the split modules: a callable of the package is
#: named by its module before the layout change, so that a run's fingerprint does not depend on where
#: the package keeps its code (a run that passed one of them keeps resuming).
_INTERNAL_FOLDERS = ("common", "store", "runner", "stats")
_SPLIT_MODULES = ("report", "cli", "forward")


def config_fingerprint(config: Mapping[str, Any]) -> str:
    """The sha256 of a run's configuration in canonical JSON: its records' ``metadata.fingerprint`` and the
    ``fingerprint`` of ``walk_forward.json``, which a reader recomputes to check that file."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def stable_module(module: str) -> str:
    """``sb3_iter_ckpt.runner.algorithms`` -> ``sb3_iter_ckpt.algorithms`` (the pre-folder name)."""
    parts = module.split(".")
    if len(parts) > 2 and parts[0] == "sb3_iter_ckpt":
        if parts[1] in _INTERNAL_FOLDERS:
            return ".".join(["sb3_iter_ckpt", *parts[2:]])
        if parts[1] in _SPLIT_MODULES:
            return f"sb3_iter_ckpt.{parts[1]}"
    return module


def name_of(fn: Any) -> str | None:
    """A callable as its import path (a ``functools.partial`` with its keyword names), for a fingerprint."""
    if fn is None:
        return None
    if isinstance(fn, functools.partial):
        return f"partial({name_of(fn.func)}, {sorted(fn.keywords)})"
    return f"{stable_module(getattr(fn, '__module__', '?'))}.{getattr(fn, '__qualname__', repr(fn))}"


def _set(obj: Any, **values: Any) -> None:
    for name, value in values.items():
        object.__setattr__(obj, name, value)  # a frozen dataclass normalizing its own fields


@dataclass(frozen=True)
class EvaluationOptions:
    """When and how the callback evaluates.

    :param eval_freq: Evaluate every ``eval_freq`` timesteps (timesteps, not calls).
    :param n_eval_episodes: Episodes per evaluation with ``evaluate_policy``.
    :param deterministic: Deterministic actions in evaluation.
    :param iteration_timesteps: A boundary every N timesteps inside one ``learn()``; None: only at its end.
    """

    eval_freq: int = 10_000
    n_eval_episodes: int = 5
    deterministic: bool = True
    iteration_timesteps: int | None = None

    def __post_init__(self) -> None:
        if int(self.eval_freq) <= 0:
            raise CheckpointError(f"eval_freq must be a positive number of timesteps, got {self.eval_freq}")
        it = self.iteration_timesteps
        if it is not None and int(it) <= 0:
            raise CheckpointError(f"iteration_timesteps must be positive, got {it}")
        _set(
            self,
            eval_freq=int(self.eval_freq),
            n_eval_episodes=int(self.n_eval_episodes),
            iteration_timesteps=None if it is None else int(it),
        )


@dataclass(frozen=True)
class CommitOptions:
    """How the callback commits each iteration.

    :param on_error: ``"warn"``: a failed commit warns, records a ``save_failed`` placeholder when possible
        and training goes on; ``"raise"``: the error stops training.
    :param async_commit: Write and fsync in a background thread (see ``IterationCheckpointCallback``).
    :param overwrite: Replace already committed iterations instead of refusing before training.
    :param retention: Optional ``RetentionPolicy`` applied after each iteration is durably committed.
    :param save_vecnormalize: Save the training env's ``VecNormalize`` statistics with each snapshot.
    :param save_replay_buffer: Save the replay buffer (as of the boundary) of off-policy algorithms.
    """

    on_error: str = "warn"
    async_commit: bool = False
    overwrite: bool = False
    retention: Any = None
    save_vecnormalize: bool = True
    save_replay_buffer: bool = False

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR:
            raise CheckpointError(f"on_error must be 'warn' or 'raise', got {self.on_error!r}")
        _set(self, async_commit=bool(self.async_commit))


@dataclass(frozen=True)
class RunOptions:
    """The settings of one walk-forward run, validated once, shared by the CLI, the runner and each window.

    :param total_timesteps: Training timesteps per iteration.
    :param algo: ``"ppo"``, ``"a2c"``, ``"dqn"`` or an import path; used by the default ``make_model``.
    :param algo_kwargs: Hyperparameters for the algorithm (recorded in the fingerprint).
    :param make_env: ``callable(prices_segment, seed) -> gym.Env``; default: the built-in ``TradingEnv``.
    :param make_model: ``callable(vec_env, seed) -> model``;
        default: ``algo(policy, env, seed=seed, **algo_kwargs)``.
    :param env_kwargs: Arguments of the built-in ``TradingEnv`` (``window_size``, ``transaction_cost``...);
        the run's ``periods_per_year`` is added unless given here.
    :param seed: Base seed; iteration ``i`` uses ``seed + i`` (deterministic per iteration).
    :param eval_freq: Evaluate every this many timesteps (0 or None, the default: ``total_timesteps // 5``).
    :param monitor: Metric that picks the best snapshot (default ``"validation.sharpe"``).
    :param mode: ``"max"`` or ``"min"``.
    :param min_score: Acceptance rule passed to the callback (a number or ``callable(metrics) -> bool``).
    :param warm_start: Start each iteration from the previous iteration's model (recorded as lineage).
    :param periods_per_year: Annualisation of the trading metrics (stored in each record's metadata); None,
        the default: estimated from the prices' dates by the runner (``data.estimate_periods_per_year``, about
        252 for an exchange's daily bars, 6,260 for hourly FX), 252 for prices without dates, which the run
        then says it assumed (``WalkForwardRunner.annualization``, the records' ``periods_per_year_source``).
        A run an earlier version wrote with its default 252 resumes with 252.
    :param retention: Optional retention policy applied after each commit.
    :param verbose: Verbosity level: 0 none, 1 a line per iteration.
    :param torch_threads: Torch threads while a window trains, in every executor (default 1; None: leave
        torch's setting alone).
    :param test_size: Rows of each window's test (trade) part, given to the splitter (0: none, as before).
        With a test part, each committed iteration's kept model trades it once (``forward.evaluate_forward``).
    :param test_gap: Rows skipped between validation and test part (needs ``test_size``).
    :param step_reader: How a step's return and position are read from the env's ``info``
        (:class:`~sb3_iter_ckpt.common.steps.StepReader`; None: ``info["return"]`` and ``info["position"]``,
        the built-in env's). Validation, train and forward scores all read it from the env that trained the model.
    :param env_history: Rows of prices an env built on a segment needs before its first decision: the
        validation segment and the test part's forward segment start this many rows early (None: the built-in
        env's ``window_size``, ``env_kwargs["window_size"]`` or 10).
    :param candidates: Several models per window (:class:`~sb3_iter_ckpt.common.candidates.Candidate`: algorithm,
        seed, hyperparameters), each trained into ``candidates/<name>/``; per window the one with the best
        selection score is chosen and copied into the root (empty, the default: one model per window, the
        run's ``algo`` and ``seed``). Not with ``make_model``.
    :param price_column: With a table (a DataFrame) for prices: the column of the traded price (the built-in
        env's prices, the forward results' rows and dates, buy-and-hold); None: the one column named close
        (the runner resolves it). Several columns (a list) for a portfolio env (``make_env`` needed): buy-and-hold
        is then their equal-weight portfolio (``data.equal_weight_index``) unless ``benchmark_column`` names
        another. Only for a table.
    :param benchmark_column: With a table: the column whose returns are buy-and-hold's (None: the price column,
        or the price columns' equal-weight portfolio).
    :param make_env_kwargs: Keyword arguments ``make_env`` is called with (``make_env(segment, seed, **kw)``;
        values recorded in the fingerprint, unlike those of a ``functools.partial``). Needs ``make_env``.
    :param policy: The policy the default ``make_model`` builds: an alias of the algorithm (``"MlpPolicy"``...),
        a policy class or its import path (``"package.module:Class"`` or ``"package.module.Class"``); None, the
        default: ``"MlpPolicy"``, ``"MultiInputPolicy"`` for a gymnasium ``Dict`` observation, a recurrent
        algorithm's own alias (``RecurrentPPO``: ``"MlpLstmPolicy"``, ``"MultiInputLstmPolicy"``), chosen per
        algorithm when the model is built. Recorded in the fingerprint only when given (and not ``"MlpPolicy"``,
        which every earlier version built). Not with ``make_model``.

    ``selection`` is the :class:`~sb3_iter_ckpt.common.selection.SelectionRule` of ``monitor``, ``mode`` and
    ``min_score`` (built and checked here); the three fields keep the values as given, which is what the
    fingerprint of a run has always recorded.
    """

    total_timesteps: int
    algo: str = "ppo"
    algo_kwargs: Mapping[str, Any] = field(default_factory=dict)
    make_env: MakeEnv | None = None
    make_model: MakeModel | None = None
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    eval_freq: int = 0
    monitor: str = "validation.sharpe"
    mode: str = "max"
    min_score: MinScore = None
    warm_start: bool = False
    periods_per_year: float | None = None
    retention: Any = None
    verbose: int = 0
    torch_threads: int | None = 1
    test_size: int = 0
    test_gap: int = 0
    candidates: tuple[Candidate, ...] = ()
    step_reader: StepReader | None = None
    env_history: int | None = None
    price_column: str | tuple[str, ...] | None = None
    benchmark_column: str | None = None
    make_env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    policy: str | type | None = None
    selection: SelectionRule = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        total = int(self.total_timesteps)
        if total <= 0:
            raise CheckpointError(f"total_timesteps must be positive, got {self.total_timesteps}")
        freq = int(self.eval_freq) if self.eval_freq else max(1, total // 5)
        ppy = self.periods_per_year
        if ppy is not None and (isinstance(ppy, bool) or not isinstance(ppy, numbers.Real) or not 0 < ppy < math.inf):
            raise CheckpointError(f"periods_per_year must be a positive number or None, got {ppy!r}")
        for name in ("test_size", "test_gap"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise CheckpointError(f"{name} must be an integer >= 0, got {value!r}")
        history = self.env_history
        if history is not None and (
            isinstance(history, bool) or not isinstance(history, numbers.Integral) or history < 0
        ):
            raise CheckpointError(f"env_history must be an integer >= 0 or None, got {history!r}")
        self._check_data_settings()
        if self.step_reader is not None and not isinstance(self.step_reader, StepReader):
            raise CheckpointError(f"step_reader must be a StepReader, got {type(self.step_reader).__name__}")
        if self.test_gap and not self.test_size:
            raise CheckpointError(f"test_gap={self.test_gap} needs a test part: set test_size > 0")
        candidates = check_candidates(self.candidates or ())
        if candidates and self.make_model is not None:
            raise CheckpointError("candidates name their own algorithm and seed: drop make_model, or the candidates")
        check_policy(self.policy, "policy")
        if self.policy is not None and self.make_model is not None:
            raise CheckpointError("policy is what the default make_model builds: drop make_model, or the policy")
        _set(
            self,
            total_timesteps=total,
            algo_kwargs=dict(self.algo_kwargs or {}),
            env_kwargs=dict(self.env_kwargs or {}),
            seed=int(self.seed),
            test_size=int(self.test_size),
            test_gap=int(self.test_gap),
            candidates=candidates,
            eval_freq=EvaluationOptions(eval_freq=freq).eval_freq,  # checked where the callback checks it
            selection=SelectionRule(self.monitor, self.mode, self.min_score),  # type: ignore[arg-type]
        )

    def _check_data_settings(self) -> None:
        columns = self.price_column
        if isinstance(columns, (list, tuple)):
            if (
                len(columns) < 2
                or len(set(columns)) != len(columns)
                or not all(isinstance(c, str) and c for c in columns)
            ):
                raise CheckpointError(f"several price columns are two or more distinct column names, got {columns!r}")
            if self.make_env is None:
                raise CheckpointError(
                    f"price_column={list(columns)} names several prices: the built-in env trades one; give your "
                    "portfolio env (make_env)"
                )
            _set(self, price_column=tuple(columns))
        for name in ("price_column", "benchmark_column"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple) and (not isinstance(value, str) or not value):
                raise CheckpointError(f"{name} must be a column name (a non-empty string) or None, got {value!r}")
        kwargs = self.make_env_kwargs
        if not isinstance(kwargs or {}, Mapping) or not all(isinstance(k, str) for k in kwargs or {}):
            raise CheckpointError(f"make_env_kwargs must be a mapping of keyword names, got {kwargs!r}")
        if kwargs and self.make_env is None:
            raise CheckpointError("make_env_kwargs are the keyword arguments of make_env: give make_env too")
        _set(self, make_env_kwargs=dict(kwargs or {}))

    @property
    def env_factory(self) -> MakeEnv | None:
        """``make_env`` with ``make_env_kwargs`` bound (a ``functools.partial``), or None: the built-in env."""
        if self.make_env is None or not self.make_env_kwargs:
            return self.make_env
        return functools.partial(self.make_env, **self.make_env_kwargs)

    @property
    def annualization(self) -> float:
        """``periods_per_year`` as a number (252 while it is still to be estimated: the runner resolves it)."""
        return DEFAULT_PERIODS_PER_YEAR if self.periods_per_year is None else self.periods_per_year

    @property
    def trading_env_kwargs(self) -> dict[str, Any]:
        """``env_kwargs`` with the run's ``periods_per_year`` unless they name their own."""
        return {"periods_per_year": self.annualization, **self.env_kwargs}

    @property
    def history(self) -> int:
        """Prices of history an env needs before a segment's first decision (``env_history``, else the built-in
        env's ``window_size``)."""
        if self.env_history is not None:
            return int(self.env_history)
        return int(self.env_kwargs.get("window_size", 10))

    @property
    def reader(self) -> StepReader:
        """``step_reader``, or the default one."""
        return StepReader() if self.step_reader is None else self.step_reader

    def for_candidate(self, candidate: Candidate) -> RunOptions:
        """The settings one candidate trains with: its algorithm, seed and hyperparameters (None: the run's).

        Its windows run no retention: the driver prunes once the chosen models are copied to the root.
        """
        kwargs = self.algo_kwargs if candidate.algo_kwargs is None else candidate.algo_kwargs
        policy = self.policy if candidate.policy is None else candidate.policy
        return dataclasses.replace(
            self,
            algo=candidate.algo,
            seed=candidate.seed,
            algo_kwargs=kwargs,
            policy=policy,
            candidates=(),
            retention=None,
        )

    def to_config(self) -> dict[str, Any]:
        """The settings that make two runs comparable (part of the resume gate's configuration).

        Its keys and values are those of every earlier version, so that a repository written before
        keeps its fingerprint and resumes.
        """
        m = self.min_score
        return {
            "algo": self.algo if self.make_model is None else name_of(self.make_model),
            "algo_kwargs": self.algo_kwargs,
            "make_env": name_of(self.make_env),
            "env_kwargs": self.trading_env_kwargs,
            "seed": self.seed,
            "total_timesteps": self.total_timesteps,
            "eval_freq": self.eval_freq,
            "monitor": self.monitor,
            "mode": self.mode,
            "min_score": name_of(m) if callable(m) else m,
            "warm_start": self.warm_start,
            "periods_per_year": self.periods_per_year,
            # Only with candidates: a run without them keeps the fingerprint of every earlier version.
            **({"candidates": [c.to_dict() for c in self.candidates]} if self.candidates else {}),
            # Only when they differ from the defaults, for the same reason.
            **({"step_reader": self._reader_config()} if self.reader != StepReader() else {}),
            **({"env_history": self.env_history} if self.env_history is not None else {}),
            # A table's columns (issue 22), only when the run has a table or a benchmark.
            **({"price_column": _json_columns(self.price_column)} if self.price_column is not None else {}),
            **({"benchmark_column": self.benchmark_column} if self.benchmark_column is not None else {}),
            **({"make_env_kwargs": self.make_env_kwargs} if self.make_env_kwargs else {}),
            # The policy (issue 23), only when given: the automatic choice follows from the algorithm and the env.
            **policy_config(self.policy),
        }

    def _reader_config(self) -> dict[str, Any]:
        fields = {k: name_of(v) if callable(v) else v for k, v in self.reader.fields().items()}
        if not fields["realized"]:
            del fields["realized"]  # the field came later: readers without it keep their fingerprint
        return fields


def _json_columns(columns: str | tuple[str, ...]) -> str | list[str]:
    return list(columns) if isinstance(columns, tuple) else columns
