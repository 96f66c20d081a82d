#!/usr/bin/env bash
# Drift check: does dpoclaims still work with the newest releases of its dependencies?
# The same steps as .ci/run, but installing the newest releases instead of requirements/lock.txt:
# a fresh virtual environment and a fresh cache, the toy built from scratch (it exits 1 naming
# the band that moved), the project's tests, then the claims. Exits non-zero at the first step
# that fails. The scheduled workflow .github/workflows/drift.yml runs this; locally:
#
#   bash scripts/drift.sh            # everything (about 25 minutes on 2 cores)
#   DRIFT_KEEP=1 bash scripts/drift.sh   # keep the venv and cache (printed) to look into a failure
#
# torch: DRIFT_TORCH (default torch==2.13.0, the CPU build pip takes from a machine that has it;
# a bare "torch" from the default index is a multi-GB CUDA build) with DRIFT_TORCH_ARGS (more pip
# arguments); TORCH_INDEX_URL, when set, is the index torch comes from (e.g. one of CPU wheels,
# which the workflow passes from the repository variable of that name).
set -uo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
venv="$work/venv"
export DPOCLAIMS_CACHE="$work/cache"
cleanup() { if [ -z "${DRIFT_KEEP:-}" ]; then rm -rf "$work"; else echo "drift: kept $work"; fi; }
trap cleanup EXIT
step() { echo; echo "== drift: $* =="; }
fail() { echo "drift: FAILED at: $*"; exit 1; }

step "install the newest releases (no lock)"
python3 -m venv "$venv" && . "$venv/bin/activate" || fail "venv"
# shellcheck disable=SC2086  # DRIFT_TORCH_ARGS holds several words
pip install --quiet "${DRIFT_TORCH:-torch==2.13.0}" ${DRIFT_TORCH_ARGS:-} ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} || fail "pip install torch"
pip install --quiet --upgrade -e ".[test,cluster]" || fail "pip install -e .[test,cluster]"
pip install --quiet --upgrade transformers trl accelerate transformer-lens tokenizers || fail "pip upgrade"
python - <<'PY'
from dpoclaims.versions import build_versions, versions_line
print("drift: installed", versions_line())
PY

step "build the toy organism from scratch (bands of the setting)"
dpoclaims build-toy --no-progress --report "$work/toy.json" || fail "build-toy: a band moved (see above)"

step "the project's tests"
python -m pytest tests -n 2 --dist loadfile -q || fail "tests (see the failures above)"

step "the claims on the toy"
python -m pytest claims/ -n 2 --dist loadfile -q --reports-dir "$work/reports" || fail "claims (see the table above)"
echo "drift: no drift: the newest releases build the toy in band and pass the tests and the claims"
