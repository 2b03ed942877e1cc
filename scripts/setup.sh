#!/usr/bin/env bash
# Install what ligoenv's demo and tests need on Debian/Ubuntu: system packages
# (when missing and we are root or have sudo) and a virtualenv in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(docker-registry skopeo umoci bubblewrap busybox-static zstd postgresql python3-venv prometheus systemd)
[[ "${LIGOENV_SETUP_BENCH:-}" == 1 ]] && DEBS+=(debootstrap hyperfine)

missing=()
for pkg in "${DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    SUDO=""
    [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    echo "setup: installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The package starts a system registry on :5000; ligoenv starts its own throwaway ones.
    # Likewise Prometheus itself: only its promtool is used, to lint the metrics in tests.
    for unit in docker-registry prometheus; do
        if command -v systemctl >/dev/null && systemctl is-active --quiet "$unit" 2>/dev/null; then
            $SUDO systemctl disable --now "$unit" >/dev/null 2>&1 || true
        fi
    done
fi

PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    echo "setup: creating .venv"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.ligoenv-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
    echo "setup: installing Python packages into .venv"
    .venv/bin/pip install -q --upgrade pip >/dev/null
    .venv/bin/pip install -q -e '.[server,dev]'
    touch "$stamp"
fi
