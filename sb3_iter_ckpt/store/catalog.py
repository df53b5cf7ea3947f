"""``Catalog``: what a repository's records answer once the signing rules are applied.

The records that count (with a key: only those whose signature verifies), in order, with a warning
for those left out; the latest, the best by a ``SelectionRule``, the rule the records name; the
forward results of the iterations that count; what ``verify`` finds. Reads only, through the index,
the trust and the forward files.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, cast

from sb3_iter_ckpt.common import record as rec
from sb3_iter_ckpt.common.candidates import CANDIDATES_DIR, candidate_scores
from sb3_iter_ckpt.common.record import Checkpoint
from sb3_iter_ckpt.common.selection import SelectionRule
from sb3_iter_ckpt.errors import CheckpointError, CheckpointNotFound, SignatureError
from sb3_iter_ckpt.store import integrity
from sb3_iter_ckpt.store.derived import RUN_FILE, read_json_object, run_file_problem
from sb3_iter_ckpt.store.forwardfiles import ForwardFiles, csv_problem, report, stitched
from sb3_iter_ckpt.store.index import RecordIndex, not_found
from sb3_iter_ckpt.store.integrity import VerifyReport
from sb3_iter_ckpt.store.members import Member, check_members, member_problems
from sb3_iter_ckpt.store.trust import Trust

if TYPE_CHECKING:
    from sb3_iter_ckpt.forward.result import ForwardResult
    from sb3_iter_ckpt.forward.stitching import StitchedForward

#: Metrics the seed's script recorded, tried in order when no selection rule is recorded.
LEGACY_MONITORS = ("mean_reward", "validation_performance", "combined_performance")


class Catalog:
    """The trusted records of one repository.

    :param index: Its records.
    :param trust: Its signing decisions.
    :param forwards: Its forward result files.
    :param where: The checkpoints folder, for messages.
    :param members: Opens each candidate's repository in a run with candidates (their forward results are
        the DSR's trials and PBO; each is checked against what the root recorded, ``store.members``); None:
        the chosen curve is the only trial.
    """

    def __init__(
        self,
        index: RecordIndex,
        trust: Trust,
        forwards: ForwardFiles,
        where: object,
        members: Callable[[], Mapping[str, Member]] | None = None,
    ) -> None:
        self.index = index
        self.trust = trust
        self.forwards = forwards
        self.where = where
        self.members = members
        self._opened: Mapping[str, Member] | None = None  # the candidates opened once, within reading()
        self._reading = False

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Within it the candidates' repositories are opened once, so that the reads of one moment (a report's
        verify, forward report and candidates chart) share what they read of them (each still checks them
        against the root); outside it every read opens them afresh."""
        if self._reading:
            yield
            return
        self._reading = True
        try:
            yield
        finally:
            self._reading, self._opened = False, None

    def _members(self) -> Mapping[str, Member]:
        if self.members is None:
            return {}
        if not self._reading:
            return self.members()
        if self._opened is None:
            self._opened = self.members()
        return self._opened

    def trusted(self) -> dict[int, Checkpoint]:
        """The readable records that count, by iteration (no warning)."""
        return self.trust.trusted(self.index.scan()[0])

    def checkpoints(self) -> list[Checkpoint]:
        """Every record that counts, in iteration order; a warning to the repository's caller names those left out."""
        good, bad, _ = self.index.scan()
        if bad:
            warnings.warn(
                f"{len(bad)} unreadable record(s) in {self.where} left out "
                f"(first: {next(iter(bad.values()))}); run verify()",
                stacklevel=3,
            )
        trusted = self.trust.trusted(good)
        if len(trusted) < len(good):
            first = min(set(good) - set(trusted))
            warnings.warn(
                f"{len(good) - len(trusted)} record(s) in {self.where} without a valid signature "
                f"left out (first: iteration {first}); run verify()",
                stacklevel=3,
            )
        return [trusted[i] for i in sorted(trusted)]

    def get(self, iteration: int) -> Checkpoint:
        ck = self.index.lookup(iteration)
        if ck is None:
            raise not_found(iteration, self.where, sorted(self.trusted()))
        return ck

    def latest(self) -> Checkpoint | None:
        good = self.trusted()
        return good[max(good)] if good else None

    def default_selection(self) -> tuple[str, str]:
        good = self.trusted()  # a forged record must not choose the rule either
        for i in sorted(good, reverse=True):
            recorded = SelectionRule.from_record(good[i].selection)
            if recorded is not None:
                return recorded.monitor, recorded.mode
        for key in LEGACY_MONITORS:
            if any(ck.score(key) is not None for ck in good.values()):
                return key, "max"
        return "mean_reward", "max"

    def rule(self, monitor: str | None = None, mode: str | None = None) -> SelectionRule:
        """The rule ``monitor`` and ``mode`` name, what they leave out as recorded."""
        d_monitor, d_mode = self.default_selection()
        return SelectionRule(monitor or d_monitor, cast("Literal['max', 'min']", mode or d_mode))

    def best(self, rule: SelectionRule) -> Checkpoint | None:
        best: Checkpoint | None = None
        best_score = 0.0
        for ck in self.checkpoints():
            score = ck.score(rule.monitor) if ck.has_model else None
            if score is None:
                continue
            # ">=": ties go to the later iteration (it has seen more data), as in retention.KeepBestK
            if best is None or rule.at_least(score, best_score):
                best, best_score = ck, score
        return best

    def no_best(self) -> CheckpointError:
        """What ``load_best`` raises when ``best`` found none: unsigned records are named as the cause."""
        good = self.index.scan()[0]
        unsigned = len(good) - len(self.trust.trusted(good))
        if unsigned:
            return SignatureError(
                f"no signed checkpoint with a model and a finite score in {self.where} "
                f"({unsigned} record(s) fail the signature check; run verify())"
            )
        return CheckpointNotFound(f"no checkpoint with a model and a finite score in {self.where}")

    def verify_report(self) -> VerifyReport:
        """Every check of ``verify``, on a fresh scan."""
        scan = self.index.scan(recheck=True)
        storage, signer, good = self.index.storage, self.trust.signer, scan[0]
        problems = integrity.record_problems(storage, scan, self.index)
        for i in sorted(good):
            problems += integrity.iteration_problems(storage, good[i], signer)
        problems += self.forwards.problems(good)
        problems += integrity.signing_problems(self.trust.read_marker(), signer, good)
        problems += integrity.best_problems(storage, self.trust.trusted(good))
        problems += self._member_problems(self.trust.trusted(good))
        problems += self._derived_problems(self.trust.trusted(good))
        return integrity.report(problems, good)

    def _derived_problems(self, good: Mapping[int, Checkpoint]) -> list[integrity.Problem]:
        """The derived files that are not signed and disagree with what the signed files give."""
        problems: list[integrity.Problem] = []
        run, why = self.run_file(good)
        if why is not None and run is not None:
            problems.append(integrity.Problem(None, RUN_FILE, why))
        storage = self.index.storage
        if storage.exists(rec.FORWARD_RETURNS):
            try:
                results = self.forward_results()
            except CheckpointError:
                return problems  # the forward files' own problems are reported
            why = csv_problem(results, storage.read_bytes(rec.FORWARD_RETURNS)) if results else "no forward results"
            if why is not None:
                problems.append(integrity.Problem(None, rec.FORWARD_RETURNS, why))
        return problems

    def run_file(self, good: Mapping[int, Checkpoint] | None = None) -> tuple[dict[str, Any] | None, str | None]:
        """``walk_forward.json`` and, when it cannot be shown as the run's configuration, why (``None, None``:
        there is none). ``good``: the records that count (default: the trusted ones)."""
        try:
            raw = read_json_object(self.index.storage, RUN_FILE)
        except CheckpointError as exc:
            return {}, f"cannot be read: {exc}"
        if raw is None:
            return None, None
        return raw, run_file_problem(raw, self.trusted() if good is None else good)

    def _member_problems(self, good: Mapping[int, Checkpoint]) -> list[integrity.Problem]:
        """A run's candidate folders: each one's own problems, and any that does not match the root."""
        if self.members is None or not candidate_scores(good.values()):
            return []
        try:
            members = self._members()
        except CheckpointError as exc:
            return [integrity.Problem(None, CANDIDATES_DIR, f"the candidates cannot be opened: {exc}")]
        problems = member_problems(good, members)
        for name, member in members.items():
            folder = f"{CANDIDATES_DIR}/{name}"
            problems += [integrity.Problem(p.iteration, f"{folder}/{p.file}", p.message) for p in member.verify()]
        return problems

    def candidate_forwards(self) -> dict[str, list[ForwardResult]]:
        """Candidate -> its forward results on the iterations the root holds (the DSR's trials, PBO, the
        report's candidates chart), after checking each folder against the root; empty without candidates."""
        good = self.trusted()
        if self.members is None or not candidate_scores(good.values()):
            return {}
        members = self._members()
        check_members(good, members)
        out: dict[str, list[ForwardResult]] = {}
        for name, member in members.items():
            try:
                out[name] = [r for r in member.forwards() if r.iteration in good]
            except CheckpointError as exc:  # say whose file it is
                raise CheckpointError(f"candidate {name!r}, {CANDIDATES_DIR}/{name}/: {exc}; run verify there") from exc
        return out

    # -- forward (out-of-sample) results ------------------------------------------------------------
    def forward_results(self) -> list[ForwardResult]:
        trusted = self.trusted()
        return [
            self.forwards.read(i, st, trusted[i]) for i, st in sorted(self.forwards.listing().items()) if i in trusted
        ]

    def forward(self, iteration: int) -> ForwardResult:
        """The checked forward result of ``iteration``, its model the record's."""
        if not self.forwards.has(iteration):
            return self.forwards.read(iteration)  # the not-found error, with its advice
        return self.forwards.read(iteration, ck=self.get(iteration))

    def forward_status(
        self, n_trials: int | None = None, trials_variance: float | None = None, logits: bool = False
    ) -> tuple[dict[str, Any] | None, str | None]:
        """``(forward report, None)``, or ``(None, why there is none)``: the same for every caller (the
        ``forward`` command, ``analyze()``, ``checkpoint_summary.json``); ``n_trials`` and ``trials_variance``: the
        trials compared, when the user names more than the candidates (``forward_statistics``); ``logits``: with
        every CSCV logit."""
        if not self.forwards.listing():
            return None, self.no_forward_reason()
        storage = self.index.storage
        try:
            results = self.forward_results()
            csv = storage.read_bytes(rec.FORWARD_RETURNS) if storage.exists(rec.FORWARD_RETURNS) else None
        except CheckpointError as exc:  # a damaged forward file must not stop a commit's summaries
            return None, f"{exc}; run verify"
        cks = {c.iteration: c for c in self.checkpoints()}
        names = list(candidate_scores(cks.values()))
        members, problem = None, None
        if self.members is not None and names:
            try:  # the candidates' data only adds the DSR's trials and PBO: without it the root's report stands
                members = self.candidate_forwards()
            except CheckpointError as exc:
                problem = str(exc)
        out, why = report(results, cks, csv, members or None, names, problem, (n_trials, trials_variance), logits)
        return out, why if out is not None else self._left_out() or why

    def _left_out(self) -> str | None:
        """Why a forward file is not among the forward results (its record is unreadable, untrusted or
        missing), naming the first such iteration; None when every forward file counts. The curve then has
        a hole or ends early, and a rerun does not fix that: the record is the cause."""
        good, bad, _ = self.index.scan()
        trusted = self.trust.trusted(good)
        for i in sorted(set(self.forwards.listing()) - set(trusted)):
            ck = good.get(i)
            if ck is not None and self.trust.signer is not None:
                try:
                    self.trust.signer.check(ck.record, i)
                    why = "its signature does not verify"
                except SignatureError as exc:
                    why = "it " + str(exc).removeprefix(f"iteration {i} ")
                edited = ": edited?" if why.endswith("wrong signature") else ""
                return (
                    f"iteration {i}'s record {ck.record_file} is not trusted ({why}{edited}), so its forward "
                    "result is left out; run verify"
                )
            unreadable = [n for n in bad if (p := rec.parse_record_name(n)) is not None and p[0] == i]
            if unreadable:
                return (
                    f"iteration {i}'s record {unreadable[0]} cannot be read, so its forward result is left out; "
                    "run verify"
                )
            return f"{rec.forward_name(i)} has no record (deleted?), so it is left out; run verify"
        return None

    def no_forward_reason(self) -> str:
        """Why a repository without forward files has none: a walk-forward without a test part, one that
        stopped before its forward step, or a folder of callbacks without a test env (and the call that adds it)."""
        run, _ = self.run_file()
        if run is None:
            return (
                "no forward results: written by IterationCheckpointCallback with no test part (no test_env); pass "
                "IterationCheckpointCallback(repo, test_env=env), or trade a committed iteration after the fact: "
                "sb3_iter_ckpt.trade_forward(repo, iteration, env)"
            )
        config = run.get("config")
        splitter = config.get("splitter") if isinstance(config, dict) else None
        if isinstance(splitter, dict) and splitter.get("test_size"):
            return (
                "no forward results: the run stopped before its forward step (each kept model trades its test part "
                "once its window is committed); run the walk-forward again to complete it"
            )
        return "no forward results: the run has no test part (walk-forward --test-size N)"

    def stitched_forward(self) -> StitchedForward | None:
        """The stitched curve recomputed from the signed forward results (None when the run wrote no
        ``forward_returns.csv``: it did not finish)."""
        storage = self.index.storage
        if not storage.exists(rec.FORWARD_RETURNS):
            return None
        return stitched(self.forward_results(), storage.read_bytes(rec.FORWARD_RETURNS))
