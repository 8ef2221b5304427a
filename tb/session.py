"""A persistent simulation of the accelerator with its DRAM, driven from Python over a socket.

:class:`RtlSession` compiles :class:`llmchip.tb.dram.System` once (cached on disk like
every other build), starts the simulator once, and then serves requests from the host
process: write and read DRAM through the simulator's hierarchy, and run programs, each
ending at the interrupt. The simulator runs :mod:`llmchip.tb.cocotb_session`; the two
talk over ``multiprocessing.connection`` on the loopback interface. See
docs/runtime-rtl.md for the protocol and the DRAM's timing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing.connection import Client, Listener
from pathlib import Path

from llmchip.config import AcceleratorConfig, check_int
from llmchip.sw.compile import GemmPlan

from . import toolchain
from .dram import SYSTEM_MODULE, SYSTEM_PUBLIC_VLT, system_verilog
from .sim import TIMESCALE, SimulationError, _tail, cached_build

__all__ = ["SystemBuild", "build_system", "RunTimeout", "RtlSession", "ENV_ADDRESS",
           "ENV_KEY", "ENV_SPEC"]

#: Environment variable holding ``host:port`` of the session's listener.
ENV_ADDRESS = "LLMCHIP_SESSION_ADDRESS"
#: Environment variable holding the connection's authentication key (hex).
ENV_KEY = "LLMCHIP_SESSION_KEY"
#: Environment variable holding the path of the session's JSON description.
ENV_SPEC = "LLMCHIP_SESSION_SPEC"

_POLL_S = 0.25   # how often a waiting host checks that the simulator is still alive


@dataclass(frozen=True)
class SystemBuild:
    """A compiled simulation model of the accelerator with its DRAM."""

    config: AcceleratorConfig
    sim: str
    module: str
    directory: Path
    key: str
    seconds: float
    cached: bool
    dram_bytes: int
    read_latency: int
    write_latency: int


@lru_cache(maxsize=8)
def _verilog(config: AcceleratorConfig, dram_bytes: int, read_latency: int,
             write_latency: int) -> str:
    return system_verilog(config, dram_bytes, read_latency, write_latency)


def build_system(config: AcceleratorConfig, sim: str, *, dram_bytes: int = 1 << 24,
                 read_latency: int = 8, write_latency: int = 2,
                 root: Path | None = None) -> SystemBuild:
    """Return a compiled model of the System for ``sim``, compiling only when not cached.

    On Verilator the model is built without cocotb's ``--public-flat-rw``: only the
    top-level signals and the DRAM array (:data:`llmchip.tb.dram.SYSTEM_PUBLIC_VLT`) are
    reachable from cocotb, which is all the session bench uses.

    Parameters
    ----------
    config : AcceleratorConfig
    sim : {"icarus", "verilator"}
    dram_bytes, read_latency, write_latency : int
        The DRAM model's size and timing (:class:`llmchip.tb.dram.SimDram`).
    root : Path, optional
        Cache folder (default :func:`llmchip.tb.sim.cache_root`).

    Raises
    ------
    TypeError, ValueError
        If a parameter is invalid.
    ToolchainError
        If the simulator is not installed.
    SimulationError
        If compilation fails (the message holds the end of the build log).
    """
    text = _verilog(config, dram_bytes, read_latency, write_latency)
    dram = {"dram_bytes": dram_bytes, "read_latency": read_latency,
            "write_latency": write_latency}
    sidecar = {**config.to_dict(), "top": "system", "module": SYSTEM_MODULE, "dram": dram}

    def write_sources(src: Path) -> Path:
        (src / "params.json").write_text(json.dumps(sidecar, indent=2, sort_keys=True))
        vpath = src / f"{SYSTEM_MODULE}.v"
        vpath.write_text(text)
        return vpath

    label = f"system-{config.rows}x{config.cols}-{dram_bytes >> 10}k-rl{read_latency}"
    directory, key, seconds, cached = cached_build(
        text=text, sidecar=sidecar, module=SYSTEM_MODULE, label=label, sim=sim, root=root,
        write_sources=write_sources,
        # Only the ports and the DRAM array are public on Verilator (3-4x faster model).
        public=SYSTEM_PUBLIC_VLT if sim == "verilator" else None)
    return SystemBuild(config, sim, SYSTEM_MODULE, directory, key, seconds, cached,
                       dram_bytes, read_latency, write_latency)


class RunTimeout(RuntimeError):
    """A program did not raise the interrupt within its cycle limit.

    Attributes
    ----------
    state : dict
        Registers read after the limit (``STATUS``, ``IQ_HEAD``, ``ERROR_INFO``, the
        performance counters). The session stays usable: the next run soft-resets.
    """

    def __init__(self, message: str, state: dict):
        super().__init__(message)
        self.state = state


def _stop(proc: subprocess.Popen, conn, listener, work: Path | None, keep: bool,
          timeout: float = 60.0) -> int | None:
    """Ask the bench to finish, wait for the simulator, clean up; return its exit code."""
    if conn is not None:
        try:
            conn.send(("quit",))
            if conn.poll(timeout):
                conn.recv()
        except (OSError, EOFError):
            pass
        conn.close()
    if listener is not None:
        listener.close()
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)   # the launcher leads its own process group
        rc = proc.wait()
    if work is not None and not keep and rc == 0:
        shutil.rmtree(work, ignore_errors=True)
    return rc


class RtlSession:
    """One running simulation of the accelerator and its DRAM, reused across programs.

    Parameters
    ----------
    config : AcceleratorConfig
    sim : {"icarus", "verilator"}
    dram_bytes : int
        Bytes of simulated DRAM (default 16 MiB).
    read_latency, write_latency : int
        The DRAM's timing in cycles (:class:`llmchip.tb.dram.SimDram`).
    root : Path, optional
        Build cache folder.
    start_timeout : float
        Seconds to wait for the simulator to start and reset the design.
    keep_files : bool
        Keep the run folder (log, results) even after a clean close.

    Raises
    ------
    TypeError, ValueError
        If a parameter is invalid.
    ToolchainError
        If the simulator is not installed.
    SimulationError
        If the build fails or the simulator does not come up (with the end of its log).

    Examples
    --------
    >>> with RtlSession(cfg, "verilator", dram_bytes=1 << 20) as s:  # doctest: +SKIP
    ...     s.write(plan.prog_addr, program_bytes)
    ...     result = s.run(plan.prog_addr, len(plan.program), limit_cycles=100_000)
    """

    def __init__(self, config: AcceleratorConfig, sim: str, *, dram_bytes: int = 1 << 24,
                 read_latency: int = 8, write_latency: int = 2, root: Path | None = None,
                 start_timeout: float = 300.0, keep_files: bool = False):
        self.build = build_system(config, sim, dram_bytes=dram_bytes,
                                  read_latency=read_latency, write_latency=write_latency,
                                  root=root)
        self.config, self.sim, self.dram_bytes = config, sim, dram_bytes
        runs = self.build.directory / "runs"
        runs.mkdir(exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="session-", dir=runs))
        self.log = self.work / "sim.log"
        key = os.urandom(32)
        listener = Listener(("127.0.0.1", 0), authkey=key)
        host, port = listener.address
        spec = {"sim": sim, "module": self.build.module,
                "build_dir": str(self.build.directory / "obj"), "work": str(self.work),
                "params": str(self.build.directory / "src" / "params.json"),
                "bus_bytes": config.bus_bytes, "dram_bytes": dram_bytes}
        (self.work / "session.json").write_text(json.dumps(spec))
        env = dict(os.environ, **{ENV_ADDRESS: f"{host}:{port}", ENV_KEY: key.hex(),
                                  ENV_SPEC: str(self.work / "session.json")})
        # The runner changes its behaviour under pytest; the launcher checks results itself.
        env.pop("PYTEST_CURRENT_TEST", None)
        if sim == "verilator":
            toolchain.setup_env(env)
        with open(self.work / "launcher.log", "w") as launcher_log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "llmchip.tb.session"], env=env, cwd=self.work,
                stdin=subprocess.DEVNULL, stdout=launcher_log, stderr=subprocess.STDOUT,
                start_new_session=True)
        self._keep = keep_files
        try:
            self._conn = self._accept(listener, key, start_timeout)
        finally:
            listener.close()
        self._finalizer = weakref.finalize(self, _stop, self._proc, self._conn, None,
                                           self.work, keep_files)
        try:
            self.info = self._receive("start-up", start_timeout)
        except KeyboardInterrupt:
            self._abort("interrupted")
            raise

    # -- plumbing ---------------------------------------------------------------------------

    def _failure(self, what: str) -> SimulationError:
        rc = self._proc.poll()
        state = f"exited with code {rc}" if rc is not None else "still running"
        log = self.log if self.log.exists() else self.work / "launcher.log"
        return SimulationError(f"{self.sim} session {what} (simulator {state}; run kept in "
                               f"{self.work}):\n{_tail(log)}")

    def _abort(self, what: str) -> SimulationError:
        """Stop the simulator after a failure; return the error describing it."""
        if self._finalizer.alive:
            self._finalizer.detach()
            _stop(self._proc, self._conn, None, self.work, True, timeout=5)
        return self._failure(what)

    def _accept(self, listener, key: bytes, timeout: float):
        box: dict = {}

        def accept():
            try:
                box["conn"] = listener.accept()
            except Exception as exc:   # reported by the waiting thread
                box["error"] = exc

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        while thread.is_alive():
            thread.join(_POLL_S)
            if thread.is_alive() and (self._proc.poll() is not None
                                      or time.monotonic() > deadline):
                # Unblock accept() by connecting ourselves, then report the failure.
                try:
                    Client(listener.address, authkey=key).close()
                except OSError:
                    pass
                thread.join()
                if "conn" in box:
                    box["conn"].close()
                what = (f"did not start within {timeout} s" if self._proc.poll() is None
                        else "failed to start")
                _stop(self._proc, None, None, None, True, timeout=5)
                raise self._failure(what)
        if "conn" not in box:
            _stop(self._proc, None, None, None, True, timeout=5)
            raise SimulationError(f"session connection failed: {box.get('error')!r}")
        return box["conn"]

    def _receive(self, what: str, timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                if self._conn.poll(_POLL_S):
                    kind, value = self._conn.recv()
                    break
            except (EOFError, OSError):
                raise self._abort(f"lost the simulator during {what}") from None
            if self._proc.poll() is not None:
                raise self._abort(f"lost the simulator during {what}")
            if deadline is not None and time.monotonic() > deadline:
                raise self._abort(f"timed out after {timeout} s during {what}")
        if kind == "error":
            raise SimulationError(f"{self.sim} session: {what} failed in the bench:\n{value}")
        if kind == "timeout":
            raise RunTimeout(f"{self.sim}: no interrupt within {value['limit_cycles']} cycles; "
                             + ", ".join(f"{k}={v:#x}" for k, v in value.items()
                                         if k in ("STATUS", "IQ_HEAD", "ERROR_INFO")), value)
        return value

    def _call(self, what: str, *request, timeout: float | None = None):
        if self.closed:
            raise SimulationError(f"{self.sim} session is closed")
        try:
            self._conn.send(request)
        except OSError:
            raise self._abort(f"lost the simulator sending {what}") from None
        return self._receive(what, timeout)

    # -- API ---------------------------------------------------------------------------------

    def _check_range(self, addr: int, nbytes: int) -> None:
        check_int("addr", addr, 0, self.dram_bytes)
        check_int("nbytes", nbytes, 0, 1 << 40)
        if addr + nbytes > self.dram_bytes:
            raise ValueError(f"bytes {addr:#x}..{addr + nbytes:#x} run past the end of the "
                             f"{self.dram_bytes:#x}-byte DRAM")

    def write(self, addr: int, data: bytes) -> None:
        """Write ``data`` into DRAM at byte address ``addr`` (no bus traffic, no time passes).

        Raises
        ------
        TypeError, ValueError
            If the range is not inside the DRAM.
        SimulationError
            If the simulator failed.
        """
        data = bytes(data)
        self._check_range(addr, len(data))
        if data:
            self._call("write", "write", addr, data)

    def read(self, addr: int, nbytes: int) -> bytes:
        """Return ``nbytes`` of DRAM from byte address ``addr`` (no bus traffic).

        Raises
        ------
        TypeError, ValueError
            If the range is not inside the DRAM.
        SimulationError
            If the simulator failed.
        """
        self._check_range(addr, nbytes)
        return self._call("read", "read", addr, nbytes) if nbytes else b""

    def run(self, iq_base: int, n_insns: int, *, limit_cycles: int = 10_000_000,
            window: tuple[int, int] | None = None, wall_timeout: float | None = None) -> dict:
        """Run the ``n_insns`` instructions at ``iq_base`` and wait for the interrupt.

        The bench soft-resets the accelerator (so every run starts at ring slot 0 with no
        error pending), sets the DMA window, ``IQ_BASE``, ``IQ_SIZE = n_insns + 1`` and the
        interrupt enables, clears the performance counters, rings the doorbell with
        ``IQ_TAIL = n_insns``, and lets the simulator run until ``irq`` rises.

        Parameters
        ----------
        iq_base : int
            DRAM byte address of the first instruction (16-byte aligned).
        n_insns : int
            Instructions in the program (its last one should be END).
        limit_cycles : int
            Cycles to wait for the interrupt before giving up.
        window : (base, size), optional
            The DMA window (default: the whole DRAM).
        wall_timeout : float, optional
            Seconds of host time to wait before declaring the simulator stuck.

        Returns
        -------
        dict
            ``STATUS``, ``ERROR_INFO``, ``IRQ_STATUS``, ``IQ_HEAD``, every 64-bit
            ``PERF_*`` counter, ``error`` (the STATUS error code), ``done``, ``cycles``
            (simulated from doorbell to interrupt), ``wall_s`` (host time the simulator
            spent on them) and ``cycles_per_s``. The interrupt is acknowledged.

        Raises
        ------
        TypeError, ValueError
            If an argument is out of range.
        RunTimeout
            If the interrupt did not come within ``limit_cycles`` (with the registers).
        SimulationError
            If the simulator failed or did not answer within ``wall_timeout``.
        """
        check_int("iq_base", iq_base, 0, self.dram_bytes - 16)
        if iq_base % 16:
            raise ValueError(f"iq_base must be 16-byte aligned, not {iq_base:#x}")
        check_int("n_insns", n_insns, 1, (1 << 32) - 2)
        check_int("limit_cycles", limit_cycles, 1, 1 << 48)
        base, size = window if window is not None else (0, self.dram_bytes)
        check_int("window base", base, 0, (1 << 32) - 1)
        check_int("window size", size, 0, (1 << 32) - 1)
        result = self._call("run", "run", {"iq_base": iq_base, "n_insns": n_insns,
                                           "limit_cycles": limit_cycles,
                                           "window": [base, size]}, timeout=wall_timeout)
        result["cycles_per_s"] = result["cycles"] / max(result["wall_s"], 1e-9)
        return result

    def csr_write(self, offset: int, value: int) -> None:
        """Write a CSR over the AXI4-Lite port (simulated time passes for the transfer).

        Raises
        ------
        TypeError, ValueError
            If ``offset`` is not a word offset of the 4 KB register space or ``value`` is
            not a 32-bit unsigned value.
        """
        check_int("offset", offset, 0, 0xFFC)
        if offset % 4:
            raise ValueError(f"offset must be a multiple of 4, not {offset:#x}")
        check_int("value", value, 0, (1 << 32) - 1)
        self._call("csr_write", "csr_write", offset, value)

    def csr_read(self, offset: int) -> int:
        """Read a CSR over the AXI4-Lite port.

        Raises
        ------
        TypeError, ValueError
            If ``offset`` is not a word offset of the 4 KB register space.
        """
        check_int("offset", offset, 0, 0xFFC)
        if offset % 4:
            raise ValueError(f"offset must be a multiple of 4, not {offset:#x}")
        return self._call("csr_read", "csr_read", offset)

    def set_sensor(self, temp_mc: int, valid: bool = True, prochot: bool = False) -> None:
        """Set what the DVFS controller's temperature sensor and PROCHOT input show, from the
        next clock edge on (configurations with ``dvfs`` only).

        Raises
        ------
        ValueError
            If the configuration has no DVFS controller or ``temp_mc`` does not fit the
            sensor's 20-bit signed reading.
        """
        if not self.config.dvfs:
            raise ValueError("this configuration has no DVFS controller (dvfs=False)")
        check_int("temp_mc", temp_mc, -(1 << 19), (1 << 19) - 1)
        self._call("sensor", "sensor", temp_mc, bool(valid), bool(prochot))

    def advance(self, cycles: int) -> dict:
        """Let ``cycles`` clock cycles pass; return the ``irq`` and ``thermtrip`` pins then."""
        check_int("cycles", cycles, 1, 1 << 40)
        return self._call("advance", "advance", cycles)

    def run_plan(self, plan: GemmPlan, *, limit_cycles: int | None = None,
                 **kwargs) -> tuple:
        """Write ``plan``'s image, run its program, and return ``(Y, result)``.

        ``Y`` is the int8 result read back from DRAM (as int64, ``m x n``); ``result`` is
        :meth:`run`'s dictionary. Extra keyword arguments go to :meth:`run`.
        """
        for addr, data in plan.image.regions.items():
            self.write(addr, data)
        n = len(plan.program)
        limit = limit_cycles or 200 * n + 50 * plan.macs // plan.config.pes + 20000
        result = self.run(plan.prog_addr, n, limit_cycles=limit, **kwargs)
        return plan.read_y(self.read), result

    def close(self) -> None:
        """Tell the bench to finish and wait for the simulator to exit.

        Does nothing if the session is already closed (or was stopped by a failure).

        Raises
        ------
        SimulationError
            If the simulator exited with an error (the message holds its log's end).
        """
        if not self._finalizer.alive:
            return
        self._finalizer.detach()
        rc = _stop(self._proc, self._conn, None, self.work, self._keep)
        if rc != 0:
            raise self._failure(f"ended with exit code {rc}")

    @property
    def closed(self) -> bool:
        """Whether the session has ended (closed, or stopped after a failure)."""
        return not self._finalizer.alive

    def __enter__(self) -> RtlSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _launch() -> None:
    """Run the cocotb bench of a session (the body of the launcher process)."""
    from cocotb_tools.runner import get_results, get_runner

    spec = json.loads(Path(os.environ[ENV_SPEC]).read_text())
    toolchain.require(spec["sim"])
    work = Path(spec["work"])
    xml = work / "results.xml"
    env = {"LLMCHIP_PARAMS": spec["params"]}
    try:
        get_runner(spec["sim"]).test(
            test_module="llmchip.tb.cocotb_session", hdl_toplevel=spec["module"],
            hdl_toplevel_lang="verilog", build_dir=spec["build_dir"], test_dir=work,
            extra_env=env, timescale=TIMESCALE, results_xml=str(xml),
            log_file=work / "sim.log")
        tests, failed = get_results(xml)
    except (RuntimeError, SystemExit) as exc:
        print(f"simulation failed: {exc}", file=sys.stderr)
        sys.exit(1)
    sys.exit(1 if failed or not tests else 0)


if __name__ == "__main__":
    _launch()
