#!/usr/bin/env bash
# The main job: install what is needed, then simulate a site of three gateways on this machine with
# the embedded broker, talk on one and measure what the others hear. Extra arguments go to
# `gateway demo` (e.g. --json, --input WAV, --out DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh measure
exec .venv/bin/gateway demo "$@"
