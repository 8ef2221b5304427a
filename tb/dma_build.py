"""Build the AxiDma's Verilog for a simulator once, run its cocotb bench, model its results.

The DMA's counterpart of :mod:`llmchip.tb.sim`: builds are cached on disk the same way
(keyed by the Verilog, the sidecar, the simulator and its options, guarded by a file lock)
and run through :func:`llmchip.tb.sim.run_cocotb`. The golden model of what a command
reads or writes lives here too, shared by the cocotb bench and the Amaranth-simulator tests.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import verilog

from llmchip.rtl.dma import AxiDma, DmaConfig, DmaError
from llmchip.rtl.generate import component_ports

from .sim import cached_build, run_cocotb

__all__ = ["MODULE", "DmaBuild", "dma_verilog", "dma_params", "build_dma", "run_dma",
           "command_code", "region_code", "row_beats", "expected_read", "apply_write",
           "random_command"]

#: Verilog module name of the generated DMA.
MODULE = "llmchip_dma"


def dma_verilog(config: DmaConfig) -> str:
    """Return the Verilog of an :class:`AxiDma` with ``config`` (reproducible: no paths).

    Ports are the signals of the signature, as :func:`llmchip.rtl.generate.verilog_text`
    does for the array: ``bus__awaddr``, ``rd_cmd__payload``, ... next to ``clk``/``rst``.
    """
    dut = AxiDma(**dataclasses.asdict(config))
    return verilog.convert(dut, name=MODULE, ports=component_ports(dut), emit_src=False)


def dma_params(config: DmaConfig) -> dict:
    """Return the ``params.json`` sidecar of the generated DMA."""
    return {"module": MODULE, "config": dataclasses.asdict(config),
            "derived": {"beat_bytes": config.beat_bytes, "size_log2": config.size_log2,
                        "read_buffer": config.read_buffer}}


@dataclass(frozen=True)
class DmaBuild:
    """A compiled simulation model of one DMA configuration (what ``run_cocotb`` needs)."""

    config: DmaConfig
    sim: str
    module: str
    directory: Path
    key: str
    seconds: float
    cached: bool


def build_dma(config: DmaConfig, sim: str, *, root: Path | None = None) -> DmaBuild:
    """Return a compiled model of the DMA for ``sim``, compiling only when not cached.

    Raises
    ------
    ValueError
        If ``sim`` is unknown.
    ToolchainError
        If the simulator is not installed.
    SimulationError
        If compilation fails (the message holds the end of the build log).
    """
    text = dma_verilog(config)
    sidecar = dma_params(config)

    def write_sources(src: Path) -> Path:
        (src / "params.json").write_text(json.dumps(sidecar, sort_keys=True))
        vpath = src / f"{MODULE}.v"
        vpath.write_text(text)
        return vpath

    directory, key, seconds, cached = cached_build(
        text=text, sidecar=sidecar, module=MODULE, label=f"dma-{config.data_width}b",
        sim=sim, root=root, write_sources=write_sources)
    return DmaBuild(config, sim, MODULE, directory, key, seconds, cached)


def run_dma(b: DmaBuild, job: dict) -> dict:
    """Run :mod:`llmchip.tb.cocotb_dma` on build ``b`` with ``job``; return its result.

    Raises
    ------
    SimulationError
        If the simulation fails or a check in the bench fails.
    """
    return run_cocotb(b, "llmchip.tb.cocotb_dma", job)


# -- golden model -------------------------------------------------------------------------


def command_code(cmd, window, addr_width: int) -> int | None:
    """Return ``BAD_COMMAND`` or ``OUT_OF_WINDOW`` for a command the DMA rejects, else None.

    ``cmd`` is ``(addr, rows, row_bytes, stride)``, ``window`` is ``(base, size)``.
    """
    addr, rows, row_bytes, stride = cmd
    if rows == 0 or row_bytes == 0:
        return DmaError.BAD_COMMAND
    end = addr + (rows - 1) * stride + row_bytes
    base, size = window
    if addr < base or end > base + size or end > 2 ** addr_width:
        return DmaError.OUT_OF_WINDOW
    return None


def region_code(regions, lo: int, hi: int) -> int:
    """Return the :class:`DmaError` of the first ``((lo, hi), code)`` region overlapping
    ``[lo, hi)``, else ``OK``."""
    for (r_lo, r_hi), code in regions:
        if lo < r_hi and r_lo < hi:
            return code
    return DmaError.OK


def row_beats(row_bytes: int, beat_bytes: int) -> int:
    """Stream beats of one row: ``ceil(row_bytes / B)``."""
    return -(-row_bytes // beat_bytes)


def expected_read(mem, cmd, beat_bytes: int, regions=(), *, base: int = 0):
    """Return the ``rd_data`` beats (``bytes``) and the completion code of a read command.

    ``mem[i]`` holds the byte at address ``base + i``; ``cmd`` is ``(addr, rows, row_bytes,
    stride)``. A bus beat (``beat_bytes`` aligned bytes) overlapping an error region
    answers with that region's code and zero data; the first such beat sets the code.
    """
    addr, rows, row_bytes, stride = cmd
    B = beat_bytes
    beats, err = [], DmaError.OK
    for r in range(rows):
        a = addr + r * stride
        row = bytearray(mem[a - base:a - base + row_bytes])
        for beat in range(a - a % B, a + row_bytes, B):
            code = region_code(regions, beat, beat + B)
            if code:
                err = err or code
                lo, hi = max(beat, a) - a, min(beat + B, a + row_bytes) - a
                row[lo:hi] = bytes(hi - lo)
        row += bytes(-len(row) % B)
        beats += [bytes(row[j:j + B]) for j in range(0, len(row), B)]
    return beats, err


def apply_write(mem, cmd, data_rows, beat_bytes: int, regions=(), *, base: int = 0) -> int:
    """Apply a write command to ``mem`` as DRAM should end up; return its completion code.

    The bytes a row puts in one bus beat are written unless they overlap an error region,
    in which case that beat's row bytes stay as they were.
    """
    addr, rows, row_bytes, stride = cmd
    B = beat_bytes
    err = DmaError.OK
    for r in range(rows):
        a = addr + r * stride
        for beat in range(a - a % B, a + row_bytes, B):
            lo, hi = max(beat, a), min(beat + B, a + row_bytes)
            code = region_code(regions, lo, hi)
            if code:
                err = err or code
            else:
                mem[lo - base:hi - base] = data_rows[r][lo - a:hi - a]
    return err


def random_command(rng, lo: int, hi: int, beat_bytes: int, max_burst: int):
    """Return a random ``(addr, rows, row_bytes, stride)`` inside ``[lo, hi)``.

    Rows are unaligned; some are one byte, some shorter than a beat, some several bursts
    long; strides may be smaller than a row (overlapping rows) or zero (repeated rows).
    ``rng`` is a :class:`numpy.random.Generator`.
    """
    B = beat_bytes
    row_bytes = int(rng.choice([1, int(rng.integers(1, 2 * B)),
                                int(rng.integers(B, 3 * B * max_burst))]))
    rows = int(rng.integers(1, 4))
    stride = int(rng.choice([row_bytes, row_bytes + int(rng.integers(0, 3 * B)),
                             int(rng.integers(0, row_bytes + 1))]))
    span = (rows - 1) * stride + row_bytes
    addr = int(rng.integers(lo, hi - span))
    return addr, rows, row_bytes, stride
