#!/usr/bin/env bash
# Mutation testing of the crash-safety and selection core with mutmut (outside CI: tens of minutes).
#
# Mutated (by name; mutmut mutates whole files, the run is restricted to these functions):
# - storage/local.py, the commit protocol: LocalStorage._write_temp, stage, write_atomic, publish,
#   copy_file, _mkdirs; storage/base.py: check_name (names that would leave the root);
# - retention.py: ranked, plan, KeepBestK.keep, KeepLastN.keep (argument checks left out);
# - the selection: selection.py's SelectionRule.strict_score, better, at_least, accepts; the
#   callback's _evaluate;
# - the best and verify: repository.py's _best; integrity.py's record_problems, is_seed_folder,
#   iteration_problems, best_problems.
# Not mutated: the read path of storage (listdir, stat_many, read_many, folder_version, hash_file),
# the sweep, storage/fsspec.py (its tests need a moto server) and the rest of each file.
# Tests: the fast in-process files named in pyproject.toml's [tool.mutmut] (no subprocesses, no
# servers). Usage, from the repository root in the project's virtualenv with the `tests` extra:
#
#     tools/mutation.sh            # run (resumes an interrupted run), then print the summary
#     tools/mutation.sh --fresh    # forget earlier results first
#     MUTATION_BUDGET=3000 tools/mutation.sh   # stop after 50 minutes, summarize what was checked
#     mutmut show <mutant name>    # the diff of one survivor
#
# The summary is the kill rate over the mutants that tests reach (mutmut's "no tests" ones are
# counted apart: nothing in the selection calls them), and the wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--fresh" ]]; then rm -rf mutants; fi
unset PYTHONPATH  # the mutated copy in mutants/ must be the package the tests import

LS='sb3_iter_ckpt.store.storage.local.xǁLocalStorageǁ'
CB='sb3_iter_ckpt.callback.xǁIterationCheckpointCallbackǁ'
REPO='sb3_iter_ckpt.repository.xǁCheckpointRepositoryǁ'
RET='sb3_iter_ckpt.retention.'
SCOPE=()
for f in _write_temp stage write_atomic publish copy_file _mkdirs; do SCOPE+=("${LS}${f}__mutmut_*"); done
SCOPE+=('sb3_iter_ckpt.store.storage.base.x_check_name__mutmut_*')
SCOPE+=("${RET}x_ranked__mutmut_*" "${RET}x_plan__mutmut_*" "${RET}xǁKeepBestKǁkeep__mutmut_*" "${RET}xǁKeepLastNǁkeep__mutmut_*")
SEL='sb3_iter_ckpt.common.selection.xǁSelectionRuleǁ'
for f in strict_score better at_least accepts; do SCOPE+=("${SEL}${f}__mutmut_*"); done
SCOPE+=("${CB}_evaluate__mutmut_*" "${REPO}_best__mutmut_*")
for f in record_problems is_seed_folder iteration_problems best_problems; do
    SCOPE+=("sb3_iter_ckpt.store.integrity.x_${f}__mutmut_*")
done
start=$(date +%s)
# Named mutants are always re-run by mutmut: after a first run, name only those not checked yet.
mapfile -t TODO < <(python - "${SCOPE[@]}" <<'PY'
import fnmatch, glob, json, sys

for meta in glob.glob("mutants/**/*.py.meta", recursive=True):
    with open(meta, encoding="utf-8") as f:
        for name, code in json.load(f)["exit_code_by_key"].items():
            if code is None and any(fnmatch.fnmatch(name, p) for p in sys.argv[1:]):
                print(name)
PY
)
if [[ ! -d mutants ]]; then TODO=("${SCOPE[@]}"); fi
# MUTATION_BUDGET: seconds after which the run stops (0: none); what was not reached is "not checked".
if ((${#TODO[@]})); then
    timeout "${MUTATION_BUDGET:-0}" mutmut run --max-children "${MUTMUT_CHILDREN:-2}" "${TODO[@]}" ||
        echo "mutmut stopped with status $?"
fi
end=$(date +%s)
mutmut results --all true > mutants/results.txt || true
python - "$((end - start))" "${SCOPE[@]}" <<'PY'
import fnmatch, sys
from collections import Counter

seconds, scope = int(sys.argv[1]), sys.argv[2:]
status = {}
for line in open("mutants/results.txt", encoding="utf-8"):
    name, sep, verdict = line.strip().rpartition(": ")
    if sep and any(fnmatch.fnmatch(name, pattern) for pattern in scope):
        status[name] = verdict
counts = Counter(status.values())
reached = sum(n for v, n in counts.items() if v not in ("no tests", "not checked"))
killed = sum(counts.get(v, 0) for v in ("killed", "timeout", "segfault", "caught by type check"))
print(f"{len(status)} mutants in scope: {dict(sorted(counts.items()))}")
print(f"kill rate {killed}/{reached} = {killed / max(reached, 1):.1%} of the mutants the tests reach; {seconds} s")
print(f"not checked yet (run again to resume): {counts.get('not checked', 0)}")
print("survivors:")
for name, verdict in sorted(status.items()):
    if verdict == "survived":
        print(f"  {name}")
PY
