#!/usr/bin/env bash
# Install everything the gateway needs on Debian 12 (run as root): system packages and a venv in
# .venv with the project installed editable. Idempotent: a second run only checks.
#   scripts/install.sh [EXTRA]    EXTRA = measure (demo) or test (test suite), default measure
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-measure}"

packages=(
  python3 python3-venv python3-dev build-essential pkg-config  # venv, and C builds of pyalsaaudio/systemd-python
  libopus0 libasound2 libasound2-dev libsystemd-dev            # libopus (ctypes), ALSA, sd_notify
  mosquitto                                                    # the embedded MQTT 5 broker
  espeak-ng                                                    # speech for the demo when no clip is found
  iproute2 dbus                                                # network namespaces, D-Bus for tests
)
if [[ $extra == test ]]; then
  packages+=(ffmpeg iptables)  # a standard player for the exported SDP; loss in namespace tests
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) != 0 ]]; then
    echo "install.sh: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "install.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Debian package enables a system-wide mosquitto on localhost:1883; the demo and tests start
# their own private brokers on free ports and don't use it.
venv=.venv
if [[ ! -x $venv/bin/python ]]; then
  /usr/bin/python3 -m venv "$venv"
fi
stamp="$venv/.installed-$extra-$(sha256sum pyproject.toml | cut -c1-16)"
if [[ ! -f $stamp ]]; then
  "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$venv/bin/python" -m pip install -q -e ".[$extra]"
  touch "$stamp"
fi
