#!/usr/bin/env bash
# Install what the tests need and run the whole test suite:   bash scripts/test.sh [pytest args]
# Idempotent and quick on a machine that has everything: apt runs only when /usr/bin/chromium is missing,
# the venv is created only once, and pip does nothing when the pinned versions are installed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian's chromium drives the browser tests (never `playwright install`)
if [ ! -x /usr/bin/chromium ]; then
  echo "== installing chromium from Debian"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
fi

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv with $($PY --version)"
  if ! "$PY" -m venv .venv; then  # Debian's python3 needs its venv package
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    rm -rf .venv && "$PY" -m venv .venv
  fi
fi
echo "== checking Python packages (pip installs only what is missing)"
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-test.txt

export GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} PYTHONUNBUFFERED=1
log=$(mktemp -t sonosynth-tests.XXXXXX)
trap 'rm -f "$log"' EXIT
echo "== pytest $*"
set +e
.venv/bin/python -m pytest -ra "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
summary=$(grep -E '(passed|failed|errors?|skipped|deselected|no tests ran).* in [0-9.]+s' "$log" | tail -n 1 | sed -E 's/^=+ //; s/ =+$//' || true)
echo "== test summary: ${summary:-(pytest printed no summary line)}"
if [ "$rc" -eq 5 ]; then
  echo "== pytest collected no tests: that is a failure (check the test paths / -k selection)" >&2
  exit 1
fi
exit "$rc"
