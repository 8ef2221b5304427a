"""Runtime: one Device API over three interchangeable backends.

``dev = llmchip.open(config, backend="model" | "verilator" | "icarus")`` returns a
:class:`Device`. ``dev.linear(x, w, bias, requant)`` and ``dev.matmul(a, b, requant)`` run
one int8 GEMM (requantized to int8) and return NumPy arrays; ``with dev.batch() as b:``
collects several operations (an output may feed a later operation) into one program that
the accelerator runs without a host round trip. Every run leaves its performance counters
in :attr:`Device.last` and adds them to :attr:`Device.totals`.

Backends:

* ``model``: :class:`llmchip.sw.executor.Machine` executes the instruction stream bit for
  bit; :func:`llmchip.sw.perf.simulate` supplies the cycle counts.
* ``verilator`` / ``icarus``: the generated RTL with an in-simulator DRAM, driven through
  cocotb by :class:`llmchip.tb.session.RtlSession` (built once per configuration and cached
  on disk); the counters are the hardware's own.

Device DRAM: weights uploaded with :meth:`Device.upload` stay until :meth:`Device.reset`;
everything else a run needs (activations, parameters, outputs, the program) is placed
above them and reused by the next run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from llmchip.config import AcceleratorConfig

from . import golden, perf
from .compile import GemmOp, Program, ProgramBuilder, choose_schedule, pack_params, pack_weights

__all__ = ["open_device", "Device", "Requant", "Weights", "Output", "Batch", "BACKENDS",
           "RuntimeFailure"]

BACKENDS = ("model", "verilator", "icarus")
_ALIGN = 64


def _align(x: int, a: int = _ALIGN) -> int:
    return (x + a - 1) // a * a


class RuntimeFailure(RuntimeError):
    """The accelerator reported an error or did not finish; the message has its status."""


@dataclass(frozen=True)
class Requant:
    """Per-output-channel requantization: ``y = round(acc * mult / 2**shift) + zero_point``.

    ``mult`` (below 2**31) and ``shift`` (0 to 63) are scalars or one value per output
    channel; see ``docs/requant.md`` for the exact rounding.
    """

    mult: np.ndarray | int
    shift: np.ndarray | int
    zero_point: int = 0

    @classmethod
    def from_scale(cls, scale, zero_point: int = 0) -> Requant:
        """Return the fixed-point form of a real scale (scalar or per channel)."""
        mult, shift = golden.quantize_multiplier(scale)
        return cls(mult, shift, int(zero_point))


@dataclass(frozen=True)
class Weights:
    """A packed weight matrix resident in device DRAM (see :meth:`Device.upload`)."""

    addr: int
    k: int
    n: int
    generation: int


@dataclass
class Output:
    """The result of an operation in a batch; ``value`` is set once the batch has run."""

    m: int
    n: int
    addr: int = -1
    value: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (self.m, self.n)


@dataclass
class _Op:
    x: np.ndarray | Output
    w: np.ndarray | Weights
    bias: np.ndarray
    requant: Requant
    relu: bool
    out: Output


@dataclass
class Batch:
    """Operations collected into one program (use through :meth:`Device.batch`)."""

    device: Device
    ops: list[_Op] = field(default_factory=list)

    def linear(self, x, w, bias=None, requant: Requant | None = None, *,
               relu: bool = False) -> Output:
        """Queue ``requant(x @ w + bias)``; ``x`` may be an earlier :class:`Output`."""
        op = self.device._make_op(x, w, bias, requant, relu)
        self.ops.append(op)
        return op.out

    def matmul(self, a, b, requant: Requant | None = None, *, relu: bool = False) -> Output:
        """Queue ``requant(a @ b)`` (no bias), e.g. attention scores or context."""
        return self.linear(a, b, None, requant, relu=relu)

    def run(self) -> list[np.ndarray]:
        """Run the queued operations as one program; return their outputs in order."""
        ops, self.ops = self.ops, []
        if ops:
            self.device._run(ops)
        return [op.out.value for op in ops]

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.run()


class Device:
    """An accelerator configuration behind a backend (see the module docstring).

    Parameters
    ----------
    config : AcceleratorConfig
    backend : {"model", "verilator", "icarus"}
    dram_bytes : int
        Device DRAM size.
    timing : llmchip.sw.perf.Timing, optional
        Constants of the ``model`` backend's cycle model.
    **options
        Passed to :class:`llmchip.tb.session.RtlSession` for the RTL backends (for
        example ``read_latency``).

    Raises
    ------
    ValueError
        If the backend is unknown or the configuration is not weight-stationary int8.
    """

    def __init__(self, config: AcceleratorConfig, backend: str = "model", *,
                 dram_bytes: int = 1 << 26, timing: perf.Timing | None = None, **options):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {type(config).__name__}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        for name, want in (("dataflow", "ws"), ("in_width", 8), ("acc_width", 32)):
            if getattr(config, name) != want:
                raise ValueError(f"the accelerator needs {name} = {want!r}, not "
                                 f"{getattr(config, name)!r}")
        self.config, self.backend, self.dram_bytes = config, backend, dram_bytes
        self.timing = timing or perf.Timing()
        if backend == "model":
            from .executor import Machine
            self._impl = _ModelBackend(Machine(config, dram_bytes), config, self.timing)
        else:
            from llmchip.tb.session import RtlSession
            self._impl = _RtlBackend(RtlSession(config, backend, dram_bytes=dram_bytes,
                                                **options), config, self.timing)
        self.generation = 0
        self._weights_top = 0
        self.last: dict = {}
        self.totals: dict = {}
        self.history: list[dict] = []
        self._programs: dict = {}

    # -- memory -------------------------------------------------------------------------

    def upload(self, w: np.ndarray) -> Weights:
        """Pack int8 ``w`` (K x N) into device DRAM once and return its handle."""
        data = pack_weights(self.config, w)
        addr = _align(self._weights_top)
        if addr + len(data) > self.dram_bytes // 2:
            raise MemoryError(f"uploaded weights exceed half of the {self.dram_bytes}-byte "
                              f"device DRAM; open the device with a larger dram_bytes")
        self._impl.write(addr, data)
        self._weights_top = addr + len(data)
        k, n = np.shape(w)
        return Weights(addr, k, n, self.generation)

    def reset(self) -> None:
        """Forget every uploaded weight (their handles become invalid)."""
        self._weights_top = 0
        self.generation += 1

    # -- operations ---------------------------------------------------------------------

    def batch(self) -> Batch:
        """Return a :class:`Batch`; leaving its ``with`` block runs it as one program."""
        return Batch(self)

    def linear(self, x, w, bias=None, requant: Requant | None = None, *,
               relu: bool = False) -> np.ndarray:
        """Return ``requant(x @ w + bias)`` as int8 (one program, one run)."""
        b = self.batch()
        b.linear(x, w, bias, requant, relu=relu)
        return b.run()[0]

    def matmul(self, a, b, requant: Requant | None = None, *, relu: bool = False) -> np.ndarray:
        """Return ``requant(a @ b)`` as int8, with both operands from the host."""
        return self.linear(a, b, None, requant, relu=relu)

    def _make_op(self, x, w, bias, requant, relu) -> _Op:
        if isinstance(x, Output):
            m, k = x.m, x.n
        else:
            x = golden.check_operand("x", x, 8)
            if x.ndim != 2 or 0 in x.shape:
                raise ValueError(f"x must be a non-empty 2D array, not shape {x.shape}")
            m, k = x.shape
        if isinstance(w, Weights):
            if w.generation != self.generation:
                raise ValueError("these weights were uploaded before Device.reset()")
            wk, n = w.k, w.n
        else:
            w = golden.check_operand("w", w, 8)
            if w.ndim != 2 or 0 in w.shape:
                raise ValueError(f"w must be a non-empty 2D array, not shape {w.shape}")
            wk, n = w.shape
        if wk != k:
            raise ValueError(f"cannot multiply shapes {(m, k)} and {(wk, n)}")
        if requant is None:
            raise ValueError("requant is required: the accelerator stores int8 results "
                             "(use Requant.from_scale or Requant(mult, shift, zero_point))")
        bias = np.zeros(n, dtype=np.int64) if bias is None else \
            np.broadcast_to(np.asarray(bias, dtype=np.int64), (n,))
        return _Op(x, w, bias, requant, bool(relu), Output(m, n))

    def _run(self, ops: list[_Op]) -> None:
        cfg = self.config
        top = _align(max(self._weights_top, self.dram_bytes // 2))
        regions: list[tuple[int, bytes]] = []

        def place(data: bytes) -> int:
            nonlocal top
            addr = top
            top = _align(addr + len(data))
            regions.append((addr, data))
            return addr

        gemms = []
        for op in ops:
            if isinstance(op.x, Output):
                if op.x.addr < 0:
                    raise ValueError("an operation's input is the output of an operation "
                                     "that is not in this batch")
                x_addr = op.x.addr
            else:
                x_addr = place(op.x.astype(np.int8).tobytes())
            w_addr = op.w.addr if isinstance(op.w, Weights) else \
                place(pack_weights(cfg, op.w))
            n = op.out.n
            rq = op.requant
            p_addr = place(pack_params(cfg, op.bias, rq.mult, rq.shift, n))
            op.out.addr = top
            top = _align(top + op.out.m * n)
            gemms.append(GemmOp(op.out.m, op.x.shape[1] if not isinstance(op.x, Output)
                                else op.x.n, n, x_addr, w_addr, p_addr, op.out.addr,
                                zero_point=int(rq.zero_point), relu=op.relu))
        # Programs depend on the operations' shapes, strides, output settings and which
        # output feeds which input, not on addresses: compile once, relocate after that.
        sources = [next((j for j, o in enumerate(ops[:i]) if o.out is op.x), -1)
                   if isinstance(op.x, Output) else -1 for i, op in enumerate(ops)]
        key = tuple((g.m, g.k, g.n, g.x_stride, g.y_stride, g.zero_point, g.relu, src)
                    for g, src in zip(gemms, sources, strict=True))
        cached = self._programs.get(key)
        if cached is None:
            builder = ProgramBuilder(cfg)
            for g in gemms:
                builder.add_gemm(g, choose_schedule(cfg, g.m, g.k, g.n))
            program = builder.finish()
            model = perf.simulate(program, timing=self.timing)
            if len(self._programs) >= 256:
                self._programs.clear()
            self._programs[key] = (program, model)
        else:
            program, model = cached[0].relocate(gemms), cached[1]
        prog_addr = place(program.image())
        if top > self.dram_bytes:
            raise MemoryError(f"the batch needs {top} bytes of device DRAM, the device has "
                              f"{self.dram_bytes}")
        t0 = time.perf_counter()
        for addr, data in regions:
            self._impl.write(addr, data)
        counters = self._impl.run(program, prog_addr, model)
        for op in ops:
            raw = self._impl.read(op.out.addr, op.out.m * op.out.n)
            op.out.value = np.frombuffer(raw, dtype=np.int8).reshape(op.out.m, op.out.n) \
                .astype(np.int64)
        wall = time.perf_counter() - t0
        self._account(program, counters, wall)

    def _account(self, program: Program, counters: dict, wall: float) -> None:
        cfg = self.config
        ideal = sum(perf.roofline(cfg, op.m, op.k, op.n)["ideal_cycles"] for op in program.ops)
        cycles = counters["cycles"]
        stats = dict(counters)
        stats.update({
            "backend": self.backend, "ops": len(program.ops), "macs": program.macs,
            "instructions": len(program.insns), "fences": program.stats["fences"],
            "utilization": program.macs / cfg.pes / cycles if cycles else 0.0,
            "ideal_cycles": ideal,
            "roofline_efficiency": ideal / cycles if cycles else 0.0,
            "shapes": [[op.m, op.k, op.n] for op in program.ops],
            "schedules": [s.describe() for s in program.schedules],
            "wall_s": wall,
        })
        self.last = stats
        self.history.append(stats)
        for key in ("cycles", "model_cycles", "macs", "array_busy", "dram_read_bytes",
                    "dram_write_bytes", "sram_reads", "acc_accesses", "ideal_cycles",
                    "wall_s", "ops"):
            if key in stats:
                self.totals[key] = self.totals.get(key, 0) + stats[key]

    def close(self) -> None:
        """Release the backend (stops an RTL simulator)."""
        self._impl.close()

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _ModelBackend:
    def __init__(self, machine, config, timing):
        self.machine, self.config, self.timing = machine, config, timing

    def write(self, addr: int, data: bytes) -> None:
        self.machine.write(addr, data)

    def read(self, addr: int, nbytes: int) -> bytes:
        return self.machine.read(addr, nbytes)

    def run(self, program: Program, prog_addr: int, res: perf.PerfResult) -> dict:
        self.machine.write(prog_addr, program.image())
        t0 = time.perf_counter()
        self.machine.run(program)
        return {"cycles": res.cycles, "model_cycles": res.cycles,
                "array_busy": res.array_busy, "dram_read_bytes": res.dram_read_bytes,
                "dram_write_bytes": res.dram_write_bytes, "sram_reads": res.sram_reads,
                "acc_accesses": res.acc_accesses, "sim_s": time.perf_counter() - t0}

    def close(self) -> None:
        pass


class _RtlBackend:
    def __init__(self, session, config, timing):
        self.session, self.config, self.timing = session, config, timing

    def write(self, addr: int, data: bytes) -> None:
        self.session.write(addr, data)

    def read(self, addr: int, nbytes: int) -> bytes:
        return self.session.read(addr, nbytes)

    def run(self, program: Program, prog_addr: int, model: perf.PerfResult) -> dict:
        self.session.write(prog_addr, program.image())
        n = len(program.insns)
        limit = 4 * model.cycles + 20000
        res = self.session.run(prog_addr, n, limit_cycles=limit)
        if res.get("error"):
            raise RuntimeFailure(f"the accelerator stopped with error code {res['error']} at "
                                 f"instruction {res.get('ERROR_INFO')} (STATUS "
                                 f"{res.get('STATUS', 0):#x})")
        return {"cycles": res["PERF_BUSY"], "model_cycles": model.cycles,
                "array_busy": res["PERF_ARRAY_BUSY"],
                "dram_read_bytes": res["PERF_DMA_RD_BYTES"],
                "dram_write_bytes": res["PERF_DMA_WR_BYTES"],
                "stall_weights": res.get("PERF_STALL_WEIGHTS", 0),
                "stall_operand": res.get("PERF_STALL_OPERAND", 0),
                "stall_token": res.get("PERF_STALL_TOKEN", 0),
                # Fixed by the program, so the model's counts are the hardware's.
                "sram_reads": model.sram_reads, "acc_accesses": model.acc_accesses,
                "sim_cycles": res["cycles"], "sim_s": res["wall_s"]}

    def close(self) -> None:
        self.session.close()


def open_device(config: AcceleratorConfig | None = None, backend: str = "model",
                **options) -> Device:
    """Return a :class:`Device` for ``config`` (default :class:`AcceleratorConfig`)."""
    return Device(config or AcceleratorConfig(), backend, **options)

