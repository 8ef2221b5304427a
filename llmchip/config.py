"""The one validated description of an accelerator, shared by hardware, testbenches and software.

Every generator, testbench and driver reads its numbers from :class:`AcceleratorConfig`
(or from the ``params.json`` sidecar it writes), so nothing guesses widths or sizes.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["AcceleratorConfig", "DATAFLOWS", "MULTS", "PIPELINES", "BUS_BITS",
           "PARAMS_SCHEMA_VERSION", "check_int"]

#: Supported dataflows: weight-stationary and output-stationary.
DATAFLOWS = ("ws", "os")

#: How the PEs' multiplies are built: left to the synthesizer (``auto``: an FPGA flow picks
#: ``dsp`` or ``hybrid`` for its part), hard multipliers, logic, a mix, or two per multiplier.
MULTS = ("auto", "dsp", "lut", "hybrid", "packed")

#: PE pipelining options: products registered once (``mult``) or twice (``mult2``),
#: accumulation split in two halves one cycle apart (``acc``), or a product option with
#: ``acc``. Each register stage adds one cycle to ``latency``.
PIPELINES = ("none", "mult", "mult2", "acc", "mult+acc", "mult2+acc")
_STAGES = {"mult": 1, "mult2": 2, "acc": 1}

#: Bumped whenever a field of ``params.json`` is added or changes meaning (2: ``dma_outstanding``;
#: 3: ``mult``, ``dsp_pes``, ``pipeline``, ``dvfs``, ``dvfs_tick_cycles``), so a sidecar never
#: reads back as a config other than the one it describes.
PARAMS_SCHEMA_VERSION = 3

#: Data widths of the AXI4 DMA port.
BUS_BITS = (64, 128, 256, 512)

# Bounds that keep generated designs meaningful; larger arrays elaborate but take hours
# to simulate and do not fit any supported FPGA part.
MAX_DIM = 256
MIN_IN_WIDTH, MAX_IN_WIDTH = 2, 16
MAX_ACC_WIDTH = 64


def check_int(name: str, value: Any, lo: int, hi: int) -> None:
    """Raise ``TypeError``/``ValueError`` naming ``name`` unless ``lo <= value <= hi``.

    Shared by every validated parameter in the project, so messages read the same.
    """
    # bool is an int subclass; True as "rows" is always a mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__} {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, not {value!r}")


@dataclass(frozen=True)
class AcceleratorConfig:
    """Parameters of one generated accelerator.

    The array computes ``Y = X @ W`` with ``X`` streamed in one row per cycle. In the
    weight-stationary dataflow ``rows`` is the reduction (K) dimension of one tile and
    ``cols`` the output (N) dimension; in the output-stationary dataflow the array holds
    a ``rows x cols`` tile of ``Y``.

    Parameters
    ----------
    rows, cols : int
        Systolic array size, 1 to 256 each; non-square arrays are allowed.
    dataflow : {"ws", "os"}
        ``"ws"`` (weight-stationary, default) or ``"os"`` (output-stationary).
    in_width : int
        Operand width in bits (signed), 2 to 16; 8 for int8.
    acc_width : int
        Accumulator width in bits (signed, two's-complement wraparound), at least
        ``2 * in_width`` and at most 64; 32 for int32.
    sp_rows : int
        Scratchpad rows of ``max(rows, cols)`` bytes, a power of two, 16 to 65536.
    sp_banks : int
        Scratchpad banks (each a simple-dual-port SRAM), a power of two, 1 to 64 and at
        most ``sp_rows``; two halves give double buffering.
    acc_rows : int
        Accumulator rows of ``cols`` int32 values, a power of two, 2 to 65536.
    param_rows : int
        Rows of per-output-channel requantization parameters, a power of two, 2 to 65536.
    bus_bits : int
        Data width of the AXI4 DMA port: 64, 128, 256 or 512.
    dma_outstanding : int
        Most DMA bursts in flight per direction, 1 to 64 (the DMA's ``max_outstanding``).
        A row of at most one beat is one burst, so such rows stream at one beat per cycle
        only while this many bursts cover the memory's round trip. The DMA's read buffer
        holds ``16 * dma_outstanding`` beats (room for that many bursts of up to 16 beats).
    mult : {"auto", "dsp", "lut", "hybrid", "packed"}
        How each PE multiplies. ``"dsp"`` and ``"auto"`` write a plain product that the
        synthesizer maps to a hard multiplier (an FPGA flow resolves ``"auto"`` to ``"dsp"``
        or ``"hybrid"`` for its part); ``"lut"`` builds every product from logic (radix-4
        Booth); ``"hybrid"`` puts the first ``dsp_pes`` PEs (row-major) on hard multipliers
        and the rest on logic; ``"packed"`` (weight-stationary, even ``2 * in_width`` bits
        apart) computes two adjacent columns' products with one wide multiply, which fits
        one DSP48E1 (25x18) for int8.
    dsp_pes : int
        PEs on hard multipliers with ``mult="hybrid"``, 0 to ``rows * cols``; must be 0
        otherwise.
    pipeline : {"none", "mult", "mult2", "acc", "mult+acc", "mult2+acc"}
        PE pipelining: ``"mult"`` registers each product before the accumulate (on ECP5
        inside the DSP), ``"mult2"`` registers it twice (the second register sits in
        the fabric between a far-away DSP and the adder); ``"acc"`` (weight-stationary)
        splits each partial sum into two halves added one cycle apart, halving the carry
        chain. Each register stage adds one cycle to :attr:`latency`.
    dvfs : bool
        Include the DVFS/thermal controller (:mod:`llmchip.sw.dvfs`): its registers at
        0x200-0x2FC, the sensor, regulator and PLL ports, and a clock enable that runs the
        core at the applied operating point's share of the top frequency. Off by default.
    dvfs_tick_cycles : int
        Clock cycles per controller tick (the unit of its timing registers), 1 to 65535;
        800 makes a tick 1 us at the top point's 800 MHz.

    Raises
    ------
    TypeError
        If a field has the wrong type.
    ValueError
        If a field is out of range; the message names the field and the value.
    """

    rows: int = 8
    cols: int = 8
    dataflow: str = "ws"
    in_width: int = 8
    acc_width: int = 32
    sp_rows: int = 1024
    sp_banks: int = 2
    acc_rows: int = 512
    param_rows: int = 64
    bus_bits: int = 128
    dma_outstanding: int = 16
    mult: str = "auto"
    dsp_pes: int = 0
    pipeline: str = "none"
    dvfs: bool = False
    dvfs_tick_cycles: int = 800

    def __post_init__(self) -> None:
        check_int("rows", self.rows, 1, MAX_DIM)
        check_int("cols", self.cols, 1, MAX_DIM)
        if not isinstance(self.dataflow, str):
            raise TypeError(f"dataflow must be a str, not {type(self.dataflow).__name__} "
                            f"{self.dataflow!r}")
        if self.dataflow not in DATAFLOWS:
            raise ValueError(f"dataflow must be one of {', '.join(DATAFLOWS)}, "
                             f"not {self.dataflow!r}")
        check_int("in_width", self.in_width, MIN_IN_WIDTH, MAX_IN_WIDTH)
        check_int("acc_width", self.acc_width, 2 * self.in_width, MAX_ACC_WIDTH)
        for name, lo, hi in (("sp_rows", 16, 1 << 16), ("sp_banks", 1, 64),
                             ("acc_rows", 2, 1 << 16), ("param_rows", 2, 1 << 16)):
            value = getattr(self, name)
            check_int(name, value, lo, hi)
            if value & (value - 1):
                raise ValueError(f"{name} must be a power of two, not {value!r}")
        if self.sp_banks > self.sp_rows:
            raise ValueError(f"sp_banks must be at most sp_rows ({self.sp_rows}), "
                             f"not {self.sp_banks!r}")
        check_int("bus_bits", self.bus_bits, 0, 1 << 16)
        if self.bus_bits not in BUS_BITS:
            raise ValueError(f"bus_bits must be one of {', '.join(map(str, BUS_BITS))}, "
                             f"not {self.bus_bits!r}")
        check_int("dma_outstanding", self.dma_outstanding, 1, 64)
        for name, choices in (("mult", MULTS), ("pipeline", PIPELINES)):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a str, not {type(value).__name__} {value!r}")
            if value not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
        check_int("dsp_pes", self.dsp_pes, 0, self.pes if self.mult == "hybrid" else 0)
        if not isinstance(self.dvfs, bool):
            raise TypeError(f"dvfs must be a bool, not {type(self.dvfs).__name__} "
                            f"{self.dvfs!r}")
        check_int("dvfs_tick_cycles", self.dvfs_tick_cycles, 1, 65535)
        if self.dataflow == "os" and (self.mult == "packed" or "acc" in self.pipeline):
            option = "mult='packed'" if self.mult == "packed" else f"pipeline={self.pipeline!r}"
            raise ValueError(f"{option} needs the weight-stationary dataflow, not 'os'")

    # -- derived values -------------------------------------------------------------

    @property
    def product_width(self) -> int:
        """Width of one signed ``in_width x in_width`` product (never overflows)."""
        return 2 * self.in_width

    @property
    def pes(self) -> int:
        """Number of processing elements (MACs per cycle at full utilization)."""
        return self.rows * self.cols

    @property
    def latency(self) -> int:
        """Cycles from accepting an input beat to its result on the output port.

        Weight-stationary: an activation row accepted in cycle ``t`` gives its output
        row in cycle ``t + rows + cols``. Output-stationary: the last ``k`` beat of a tile
        accepted in cycle ``t`` gives output row 0 of that tile in cycle
        ``t + rows + cols`` (row ``i`` in cycle ``t + rows + cols + i``). Each
        :attr:`pipeline` stage adds one cycle.
        """
        return self.rows + self.cols + self.pipe_stages

    @property
    def pipe_stages(self) -> int:
        """Extra PE pipeline stages selected by :attr:`pipeline` (0 to 3)."""
        if self.pipeline == "none":
            return 0
        return sum(_STAGES[stage] for stage in self.pipeline.split("+"))

    @property
    def tile_interval(self) -> int:
        """Minimum cycles between the starts of two tiles (rows per weight load in WS,
        drain length in OS): a tile of ``T`` beats occupies ``max(T, tile_interval)``
        cycles of the input port."""
        return self.rows

    @property
    def sp_row_bytes(self) -> int:
        """Bytes per scratchpad row: one activation row (``rows``) or weight row (``cols``)."""
        return max(self.rows, self.cols)

    @property
    def bus_bytes(self) -> int:
        """Bytes per DMA data beat."""
        return self.bus_bits // 8

    @property
    def port_widths(self) -> dict[str, int]:
        """Bit widths of the array's flat Verilog stream payloads (lane 0 in the low bits,
        ``last`` in the top bit where present)."""
        return {
            "a_in__payload": self.rows * self.in_width + 1,
            "w_in__payload": self.cols * self.in_width,
            "y_out__payload": self.cols * self.acc_width + 1,
        }

    # -- serialisation --------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Return the fields and derived values as the ``params.json`` dictionary."""
        return {
            "schema": PARAMS_SCHEMA_VERSION,
            "config": dataclasses.asdict(self),
            "derived": {
                "product_width": self.product_width,
                "pes": self.pes,
                "latency": self.latency,
                "tile_interval": self.tile_interval,
                "port_widths": self.port_widths,
                "sp_row_bytes": self.sp_row_bytes,
                "sp_bytes": self.sp_rows * self.sp_row_bytes,
                "acc_bytes": self.acc_rows * self.cols * self.acc_width // 8,
                "bus_bytes": self.bus_bytes,
            },
        }

    def write_params(self, path: str | Path, **extra: Any) -> Path:
        """Write the ``params.json`` sidecar and return its path.

        Parameters
        ----------
        path : str or Path
            File to write, or a directory (``params.json`` is created in it).
        **extra
            Additional top-level entries (for example the top module's name).
        """
        path = Path(path)
        if path.is_dir():
            path = path / "params.json"
        data = self.to_dict()
        data.update(extra)
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AcceleratorConfig:
        """Build a config from :meth:`to_dict` output (or a plain field dictionary).

        Raises
        ------
        ValueError
            If the schema version is unknown or a field is not a config field.
        """
        if "config" in data:
            schema = data.get("schema")
            if schema != PARAMS_SCHEMA_VERSION:
                raise ValueError(f"params schema must be {PARAMS_SCHEMA_VERSION}, "
                                 f"not {schema!r}")
            data = data["config"]
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def read_params(cls, path: str | Path) -> AcceleratorConfig:
        """Read a config back from a ``params.json`` file or the directory holding it."""
        path = Path(path)
        if path.is_dir():
            path = path / "params.json"
        return cls.from_dict(json.loads(path.read_text()))

    def replace(self, **changes: Any) -> AcceleratorConfig:
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
