#!/usr/bin/env bash
# Install what is needed, then lint, type-check and run the whole test suite.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh test
start=$(date +%s)
.venv/bin/ruff check gateway tests bench
.venv/bin/mypy
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [[ $rc == 5 ]]; then
  echo "test.sh: pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
echo "test.sh: pytest exit $rc, wall time $(( $(date +%s) - start )) s" >&2
exit $rc
