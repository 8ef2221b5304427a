"""Build generated Verilog for a simulator once, and run cocotb testbenches on it.

Builds are cached on disk, keyed by the SHA-256 of the Verilog and its params.json, the
simulator and its version, and the build options, so a configuration compiles once and
later runs (in the same test session or in later ones) reuse it. A file lock makes
concurrent builders (for example pytest-xdist workers) wait for each other instead of
compiling twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmchip.cache import cache_root
from llmchip.config import AcceleratorConfig
from llmchip.rtl.generate import LINT_WAIVERS, generate, verilog_text

from . import toolchain

__all__ = ["SimulationError", "Build", "cache_root", "cached_build", "build", "run_cocotb",
           "run_array"]

# One cycle is 10 ns in every testbench; Icarus needs the timescale spelled out.
TIMESCALE = ("1ns", "1ps")


class SimulationError(RuntimeError):
    """A build or a simulation failed; the message ends with the tail of its log."""


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass(frozen=True)
class Build:
    """A compiled simulation model of one configuration."""

    config: AcceleratorConfig
    sim: str
    top: str
    module: str
    directory: Path
    key: str
    seconds: float
    cached: bool


def _build_args(sim: str) -> list[str]:
    if sim == "verilator":
        # Keep verilated.mk's optimization defaults: hot code -Os, rarely run code -O0.
        # Raising the latter (-CFLAGS -O1) makes gcc spend tens of minutes on the huge
        # VPI symbol-table constructor that cocotb's --public-flat-rw produces.
        return ["-Wno-fatal"]
    # Yosys declares its "evaluate once at time 0" trigger as `reg t = 0;`. In Verilog-2005
    # that initializer is an event at time 0 that runs every `always @*` block once; in
    # the SystemVerilog mode the cocotb runner selects (-g2012) it is not, and
    # combinational outputs whose inputs never change stay X. The later flag wins.
    return ["-g2005"]


def _runner(sim: str, public: str | None):
    """Return the cocotb runner for ``sim``; with ``public``, one without ``--public-flat-rw``."""
    from cocotb_tools.runner import Verilator, get_runner

    if public is None:
        return get_runner(sim)

    class _VerilatorPublicByConfig(Verilator):
        """Verilator runner whose build leaves out ``--public-flat-rw``.

        cocotb adds the flag unconditionally; it makes every signal public and writable,
        which forces Verilator to re-evaluate the whole design several times per clock.
        What must stay reachable is then named in a configuration file instead.
        """

        def _build_command(self):
            cmds = super()._build_command()
            return [[a for a in cmds[0] if a != "--public-flat-rw"], *cmds[1:]]

    return _VerilatorPublicByConfig()


def cached_build(*, text: str, sidecar: dict, module: str, label: str, sim: str,
                 write_sources, root: Path | None = None, public: str | None = None):
    """Compile Verilog ``text`` for ``sim`` unless an identical build is cached.

    The cache key covers the Verilog, the sidecar, the simulator and its version, the build
    options, the lint waivers and ``public``; a file lock makes concurrent builders wait for
    each other.

    Parameters
    ----------
    text : str
        The Verilog.
    sidecar : dict
        The ``params.json`` content (part of the key).
    module : str
        Top module name.
    label : str
        Readable prefix of the cache folder name.
    sim : {"icarus", "verilator"}
    write_sources : callable
        ``write_sources(src_dir)`` writes the Verilog (and sidecars) into ``src_dir`` and
        returns the Verilog's path.
    root : Path, optional
        Cache folder (default :func:`cache_root`).
    public : str, optional
        Verilator only. ``None`` (default): cocotb's ``--public-flat-rw``, every signal is
        reachable from cocotb. Otherwise the text of a Verilator configuration file
        (```verilator_config`` plus ``public_flat_rw -module ... -var ...`` lines) naming
        the only signals cocotb may reach; the flag is then left out, which makes the model
        several times faster. The text is part of the key.

    Returns
    -------
    (directory, key, seconds, cached)

    Raises
    ------
    ValueError
        If ``public`` is given for a simulator other than Verilator.
    ToolchainError, SimulationError
    """
    if public is not None and sim != "verilator":
        raise ValueError(f"public applies to Verilator builds only, not {sim!r}")
    toolchain.require(sim)
    args = _build_args(sim)
    tool = toolchain.versions()[sim]
    # Builds without `public` keep the key they have always had.
    extra = [] if public is None else ["public-by-config", public]
    key = hashlib.sha256("\0".join([text, json.dumps(sidecar, sort_keys=True), sim, tool,
                                    *args, LINT_WAIVERS.read_text(), *extra]).encode()
                         ).hexdigest()[:20]
    root = Path(root) if root else cache_root()
    directory = root / f"{label}-{sim}-{key}"
    directory.parent.mkdir(parents=True, exist_ok=True)
    stamp = directory / "build.json"
    with open(directory.parent / f".{directory.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists():
            return directory, key, json.loads(stamp.read_text())["seconds"], True
        if directory.exists():
            shutil.rmtree(directory)
        (directory / "src").mkdir(parents=True)
        vpath = write_sources(directory / "src")
        t0 = time.perf_counter()
        sources = [vpath] + ([LINT_WAIVERS] if sim == "verilator" else [])
        if public is not None:
            vlt = directory / "src" / "public.vlt"
            vlt.write_text(public)
            sources.append(vlt)
        log = directory / "build.log"
        try:
            _runner(sim, public).build(sources=sources, hdl_toplevel=module,
                                       build_dir=directory / "obj", build_args=args,
                                       timescale=TIMESCALE, log_file=log, always=True)
        except (RuntimeError, SystemExit) as exc:
            raise SimulationError(f"{sim} build of {label} failed:\n{_tail(log)}") from exc
        seconds = time.perf_counter() - t0
        stamp.write_text(json.dumps({"module": module, "seconds": seconds, "tool": tool,
                                     "sha256": hashlib.sha256(text.encode()).hexdigest()}))
        return directory, key, seconds, False


def build(config: AcceleratorConfig, sim: str, *, top: str = "array",
          root: Path | None = None) -> Build:
    """Return a compiled model of ``config`` for ``sim``, compiling only when not cached.

    Raises
    ------
    ValueError
        If ``sim`` or ``top`` is unknown.
    ToolchainError
        If the simulator is not installed.
    SimulationError
        If compilation fails (the message holds the end of the build log).
    """
    text = verilog_text(config, top)
    module = f"llmchip_{top}"
    label = f"{top}-{config.rows}x{config.cols}-{config.dataflow}"
    directory, key, seconds, cached = cached_build(
        text=text, sidecar=config.to_dict(), module=module, label=label, sim=sim, root=root,
        write_sources=lambda src: generate(config, src, top=top, text=text).verilog)
    return Build(config, sim, top, module, directory, key, seconds, cached)


def run_cocotb(b: Build, test_module: str, job: dict) -> dict:
    """Run cocotb module ``test_module`` on build ``b`` with ``job`` and return its result.

    The job is handed over as JSON in ``LLMCHIP_STIM`` and the build's ``params.json`` in
    ``LLMCHIP_PARAMS``; the testbench writes its result to ``LLMCHIP_RESULT``. On failure
    the run folder (job, log, results) is kept and named in the message.

    Raises
    ------
    SimulationError
        If the simulator fails or a cocotb test fails (the message holds the log's end).
    """
    from cocotb_tools.runner import get_results, get_runner

    toolchain.require(b.sim)
    runs = b.directory / "runs"
    runs.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=runs))
    stim, result, log = work / "job.json", work / "result.json", work / "sim.log"
    stim.write_text(json.dumps(job))
    runner = get_runner(b.sim)
    env = {"LLMCHIP_STIM": str(stim), "LLMCHIP_RESULT": str(result),
           "LLMCHIP_PARAMS": str(b.directory / "src" / "params.json")}
    xml = work / "results.xml"
    try:
        runner.test(test_module=test_module, hdl_toplevel=b.module, hdl_toplevel_lang="verilog",
                    build_dir=b.directory / "obj", test_dir=work, extra_env=env,
                    timescale=TIMESCALE, results_xml=str(xml), log_file=log)
        tests, failed = get_results(xml)
    except (RuntimeError, SystemExit) as exc:
        raise SimulationError(f"{b.sim} simulation failed (run kept in {work}):\n"
                              f"{_tail(log)}") from exc
    if failed or not tests:
        raise SimulationError(f"{b.sim}: {failed} of {tests} cocotb tests failed (run kept "
                              f"in {work}):\n{_tail(log)}")
    data = json.loads(result.read_text())
    shutil.rmtree(work, ignore_errors=True)
    return data


def run_array(config: AcceleratorConfig, tiles, sim: str, *, seed: int = 0,
              valid_prob: float = 1.0, b: Build | None = None) -> dict:
    """Stream ``tiles`` through the generated array on ``sim`` and check it bit for bit.

    Parameters
    ----------
    config : AcceleratorConfig
    tiles : list of (ndarray, ndarray)
        As for :func:`llmchip.tb.streams.make_stimulus`.
    sim : {"icarus", "verilator"}
    seed : int
        Seed of the idle-cycle pattern (printed by the testbench for replay).
    valid_prob : float
        Probability that each input stream offers a beat in a cycle (1.0: every cycle).
    b : Build, optional
        A build from :func:`build` (made if not given).

    Returns
    -------
    dict with ``a_cycles``, ``w_cycles``, ``outputs`` ([cycle, lanes, last] per row),
    ``cycles``, ``wall_s``.

    Raises
    ------
    SimulationError
        If any row differs from the golden model or a latency formula does not hold.
    """
    b = b or build(config, sim)
    if b.config != config or b.sim != sim:
        raise ValueError(f"build is for {b.config}/{b.sim}, not {config}/{sim}")
    if not 0 < valid_prob <= 1:
        raise ValueError(f"valid_prob must be in (0, 1], not {valid_prob!r}")
    tiles = [(np.asarray(a, dtype=np.int64), np.asarray(w, dtype=np.int64)) for a, w in tiles]
    beats = sum(a.shape[0] + w.shape[0] if config.dataflow == "ws" else 2 * a.shape[1]
                for a, w in tiles)
    max_cycles = int((beats + 2 * len(tiles) * config.rows + config.latency + 64)
                     / valid_prob) + 100
    job = {"tiles": [[a.tolist(), w.tolist()] for a, w in tiles],
           "seed": int(seed), "valid_prob": float(valid_prob), "max_cycles": max_cycles}
    return run_cocotb(b, "llmchip.tb.cocotb_array", job)
