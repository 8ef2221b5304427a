"""Systolic array: a rows x cols grid of PEs behind plain row-vector stream ports.

The array hides its diagonal wavefront: input lanes are skewed and output columns
de-skewed inside, so a user sends one row vector per cycle and receives one per cycle.

Weight-stationary (``"ws"``), computing ``Y_t = X_t @ W_t`` per tile ``t``:

* ``w_in`` takes the ``rows`` rows of ``W_t`` (``rows x cols``), row 0 first, one per beat.
* ``a_in`` takes the rows of ``X_t`` (``T x rows``), one per beat, ``last`` on the final
  row. The first row of a tile waits until its weights are fully loaded; the next tile's
  weights load while this tile streams, so tiles of ``T >= rows`` rows follow each other
  with no bubble (shorter tiles cost ``rows`` cycles each: the weight port's bandwidth).
* ``y_out`` gives the rows of ``Y_t`` (``T x cols``), ``rows + cols`` cycles after the
  matching ``a_in`` beat, ``last`` on the final row.

Output-stationary (``"os"``), computing ``Y_t = A_t @ B_t`` per tile (``A_t`` is
``rows x K``, ``B_t`` is ``K x cols``, any ``K >= 1``):

* ``a_in`` takes column ``k`` of ``A_t`` and ``w_in`` row ``k`` of ``B_t`` on the same beat
  (both must be valid; they are accepted together), ``last`` (on ``a_in``) on ``k = K-1``.
* ``y_out`` gives the ``rows`` rows of ``Y_t`` in order, row 0 ``rows + cols`` cycles after
  the ``last`` beat. The next tile accumulates while this one drains; two ``last`` beats
  are at least ``rows`` cycles apart (``a_in`` waits otherwise), so ``K >= rows`` streams
  with no bubble.

``y_out`` has no back-pressure (``always_ready``): the consumer takes every row.

The ``mult`` and ``pipeline`` options of the config choose each PE's multiplier and
registers (see :class:`~llmchip.config.AcceleratorConfig`); pipelining adds its stages to
``config.latency`` and changes nothing else at the ports.

Internally, physical PE row ``p`` serves lane ``rows - 1 - p``: weight rows shift into the
top of the array first-in-deepest, and output-stationary results drain out of the bottom
first-in-first-out, so reversing the lanes lets both ports use natural row order.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from llmchip.config import AcceleratorConfig

from .pe import PE, PackedPair, _rejected

__all__ = ["SystolicArray", "array_signature", "pe_mults"]


def array_signature(config: AcceleratorConfig) -> wiring.Signature:
    """Return the port signature of a :class:`SystolicArray` for ``config``."""
    op, acc = signed(config.in_width), signed(config.acc_width)
    return wiring.Signature({
        "a_in": In(stream.Signature(data.StructLayout({
            "data": data.ArrayLayout(op, config.rows), "last": 1}))),
        "w_in": In(stream.Signature(data.ArrayLayout(op, config.cols))),
        "y_out": Out(stream.Signature(data.StructLayout({
            "data": data.ArrayLayout(acc, config.cols), "last": 1}), always_ready=True)),
    })


def pe_mults(config: AcceleratorConfig) -> list[list[str]]:
    """Return the multiplier (``"dsp"``, ``"lut"`` or ``"packed"``) of each PE.

    Indexed ``[p][j]`` by physical row and column. ``"hybrid"`` puts the first
    ``dsp_pes`` PEs in row-major order on hard multipliers; ``"packed"`` pairs columns
    ``(0, 1), (2, 3), ...`` and leaves the last column of an odd width on its own (``"dsp"``).
    """
    R, C = config.rows, config.cols
    if config.mult == "hybrid":
        return [["dsp" if p * C + j < config.dsp_pes else "lut" for j in range(C)]
                for p in range(R)]
    if config.mult == "packed":
        return [["packed" if j < C - C % 2 else "dsp" for j in range(C)] for _ in range(R)]
    kind = "lut" if config.mult == "lut" else "dsp"
    return [[kind] * C for _ in range(R)]


def _delay(m: Module, value, cycles: int, name: str):
    """Return ``value`` delayed by ``cycles`` registers (``value`` itself for 0)."""
    for i in range(cycles):
        reg = Signal.like(value, name=f"{name}_d{i}")
        m.d.sync += reg.eq(value)
        value = reg
    return value


class SystolicArray(wiring.Component):
    """A ``config.rows x config.cols`` systolic array (see the module docstring).

    Parameters
    ----------
    config : AcceleratorConfig
        Array size, dataflow and widths.

    Raises
    ------
    TypeError
        If ``config`` is not an :class:`AcceleratorConfig`.
    """

    def __init__(self, config: AcceleratorConfig):
        if not isinstance(config, AcceleratorConfig):
            raise _rejected(self, TypeError(
                f"config must be an AcceleratorConfig, not {type(config).__name__}"))
        self.config = config
        super().__init__(array_signature(config))

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        R, C = cfg.rows, cfg.cols
        kinds = pe_mults(cfg)
        pes = [[None] * C for _ in range(R)]
        for p in range(R):
            for j in range(C):
                if kinds[p][j] != "packed":
                    pes[p][j] = PE(cfg.dataflow, cfg.in_width, cfg.acc_width,
                                   mult=kinds[p][j], pipeline=cfg.pipeline)
                    m.submodules[f"pe_{p}_{j}"] = pes[p][j]
                elif j % 2 == 0:
                    pair = PackedPair(cfg.in_width, cfg.acc_width, pipeline=cfg.pipeline)
                    m.submodules[f"pe_{p}_{j}_{j + 1}"] = pair
                    pes[p][j] = pes[p][j + 1] = pair
        if cfg.dataflow == "ws":
            self._elaborate_ws(m, pes)
        else:
            self._elaborate_os(m, pes)
        return m

    # -- weight-stationary ---------------------------------------------------------

    def _elaborate_ws(self, m: Module, pes) -> None:
        cfg = self.config
        R, C = cfg.rows, cfg.cols
        a_in, w_in, y_out = self.a_in, self.w_in, self.y_out

        full = Signal()       # shadow registers hold a complete, not yet used weight tile
        in_tile = Signal()    # accepted a tile's first row but not yet its last
        count = Signal(range(max(R, 2)))  # weight rows of the tile being loaded accepted so far

        a_fire = Signal()
        w_fire = Signal()
        starts = Signal()     # this a_in beat is the first row of a tile: switch weights
        m.d.comb += [
            a_in.ready.eq(in_tile | full),
            a_fire.eq(a_in.valid & a_in.ready),
            starts.eq(a_fire & ~in_tile),
            # Loading may begin on the very edge that switches the shadow into use.
            w_in.ready.eq(~full | starts),
            w_fire.eq(w_in.valid & w_in.ready),
        ]
        completes = Signal()
        m.d.comb += completes.eq(w_fire & (count == R - 1))
        with m.If(w_fire):
            m.d.sync += count.eq(Mux(completes, 0, count + 1))
        m.d.sync += full.eq((full & ~starts) | completes)
        with m.If(a_fire):
            m.d.sync += in_tile.eq(~a_in.payload.last)

        # Column-0 control of the shadow chain: beat k enters row 0 and must stop at row
        # R-1-k, so row p shifts on beats k <= R-1-p, each arriving p cycles after entry.
        ctl_v, ctl_k = w_fire, count
        for p in range(R):
            if p:
                v, k = Signal(name=f"wctl_v{p}"), Signal(range(max(R, 2)), name=f"wctl_k{p}")
                m.d.sync += [v.eq(ctl_v), k.eq(ctl_k)]
                ctl_v, ctl_k = v, k
            # Row 0 takes every beat (the bound R-1 is the counter's maximum).
            m.d.comb += pes[p][0].wen_in.eq(ctl_v & (ctl_k <= R - 1 - p) if p else ctl_v)

        # Weight columns are skewed like the activations, so column j lags column 0 by j
        # (by j + 1 for the left column of a packed pair: it runs on its right column's
        # schedule).
        for j in range(C):
            m.d.comb += self._w_port(pes[0][j], j).eq(
                _delay(m, w_in.payload[j], j + self._shifted(pes[0][j], j), f"wskew{j}"))

        # Activation lanes: physical row p takes lane R-1-p, skewed by p cycles.
        for p in range(R):
            lane = Signal(signed(cfg.in_width), name=f"a_lane{p}")
            m.d.comb += lane.eq(Mux(a_fire, a_in.payload.data[R - 1 - p], 0))
            m.d.comb += [
                pes[p][0].a_in.eq(_delay(m, lane, p, f"askew{p}")),
                pes[p][0].sw_in.eq(_delay(m, starts, p, f"swskew{p}")),
            ]

        for p in range(R):
            for j in range(C):
                pe = pes[p][j]
                if j and pe is not pes[p][j - 1]:
                    m.d.comb += [pe.a_in.eq(pes[p][j - 1].a_out),
                                 pe.sw_in.eq(pes[p][j - 1].sw_out),
                                 pe.wen_in.eq(pes[p][j - 1].wen_out)]
                if p:
                    m.d.comb += [self._psum_port(pe, j, "in").eq(
                                     self._psum_port(pes[p - 1][j], j, "out")),
                                 self._w_port(pe, j).eq(self._w_port(pes[p - 1][j], j, "out"))]
                else:
                    m.d.comb += self._psum_port(pe, j, "in").eq(0)

        # Column j's sum leaves the bottom j cycles after column 0's: de-skew to align.
        # With split accumulation the high half of every sum runs one cycle late.
        split = "acc" in cfg.pipeline
        half = cfg.acc_width // 2
        for j in range(C):
            bottom = self._psum_port(pes[R - 1][j], j, "out")
            lag = C - 1 - j - self._shifted(pes[R - 1][j], j)
            if split:
                m.d.comb += y_out.payload.data[j].eq(Cat(
                    _delay(m, bottom[:half], lag + 1, f"yskew{j}_lo"),
                    _delay(m, bottom[half:], lag, f"yskew{j}_hi")))
            else:
                m.d.comb += y_out.payload.data[j].eq(_delay(m, bottom, lag, f"yskew{j}"))
        m.d.comb += [
            y_out.valid.eq(_delay(m, a_fire, cfg.latency, "yvalid")),
            y_out.payload.last.eq(_delay(m, a_fire & a_in.payload.last, cfg.latency,
                                         "ylast")),
        ]

    @staticmethod
    def _shifted(pe, j: int) -> int:
        """1 if column ``j`` is the left half of a :class:`PackedPair` (runs a cycle late)."""
        return int(isinstance(pe, PackedPair) and j % 2 == 0)

    @staticmethod
    def _w_port(pe, j: int, direction: str = "in"):
        port = pe.w_in if direction == "in" else pe.w_out
        return port[j % 2] if isinstance(pe, PackedPair) else port

    @staticmethod
    def _psum_port(pe, j: int, direction: str):
        port = pe.psum_in if direction == "in" else pe.psum_out
        return port[j % 2] if isinstance(pe, PackedPair) else port

    # -- output-stationary ---------------------------------------------------------

    def _elaborate_os(self, m: Module, pes) -> None:
        cfg = self.config
        R, C = cfg.rows, cfg.cols
        a_in, w_in, y_out = self.a_in, self.w_in, self.y_out

        in_tile = Signal()
        cooldown = Signal(range(max(R, 2)))  # cycles until another tile may end
        ok = Signal()
        fire = Signal()
        first = Signal()
        last = Signal()
        m.d.comb += [
            ok.eq(~(a_in.payload.last & (cooldown != 0))),
            a_in.ready.eq(w_in.valid & ok),
            w_in.ready.eq(a_in.valid & ok),
            fire.eq(a_in.valid & w_in.valid & ok),
            first.eq(fire & ~in_tile),
            last.eq(fire & a_in.payload.last),
        ]
        with m.If(fire):
            m.d.sync += in_tile.eq(~a_in.payload.last)
        with m.If(last):
            m.d.sync += cooldown.eq(R - 1)
        with m.Elif(cooldown != 0):
            m.d.sync += cooldown.eq(cooldown - 1)

        # Operands are zeroed on idle cycles: accumulators add every cycle.
        for p in range(R):
            lane = Signal(signed(cfg.in_width), name=f"a_lane{p}")
            m.d.comb += lane.eq(Mux(fire, a_in.payload.data[R - 1 - p], 0))
            m.d.comb += [
                pes[p][0].a_in.eq(_delay(m, lane, p, f"askew{p}")),
                pes[p][0].first_in.eq(_delay(m, first, p, f"firstskew{p}")),
                pes[p][0].last_in.eq(_delay(m, last, p, f"lastskew{p}")),
            ]
        for j in range(C):
            lane = Signal(signed(cfg.in_width), name=f"b_lane{j}")
            m.d.comb += lane.eq(Mux(fire, w_in.payload[j], 0))
            m.d.comb += pes[0][j].b_in.eq(_delay(m, lane, j, f"bskew{j}"))

        # Drain: the bottom row's result is ready R+1 cycles (plus the pipeline stages)
        # after the last beat (column frame). During the R drain cycles m = 0..R-1, row p
        # shifts while m < p, so each row keeps the results still passing through it and
        # is free for the next tile.
        start = _delay(m, last, R + 1 + cfg.pipe_stages, "drain_start")
        draining = Signal()
        step = Signal(range(max(R, 2)))
        with m.If(start):
            m.d.sync += [draining.eq(R > 1), step.eq(1 if R > 1 else 0)]
        with m.Elif(draining):
            m.d.sync += step.eq(step + 1)
            with m.If(step == R - 1):
                m.d.sync += [draining.eq(0), step.eq(0)]
        active = Signal()
        cur = Signal(range(max(R, 2)))
        m.d.comb += [active.eq(start | draining), cur.eq(Mux(draining, step, 0))]
        for p in range(R):
            m.d.comb += pes[p][0].den_in.eq(active & (cur < p) if p else Const(0))

        for p in range(R):
            for j in range(C):
                pe = pes[p][j]
                if j:
                    m.d.comb += [pe.a_in.eq(pes[p][j - 1].a_out),
                                 pe.first_in.eq(pes[p][j - 1].first_out),
                                 pe.last_in.eq(pes[p][j - 1].last_out),
                                 pe.den_in.eq(pes[p][j - 1].den_out)]
                if p:
                    m.d.comb += [pe.b_in.eq(pes[p - 1][j].b_out),
                                 pe.d_in.eq(pes[p - 1][j].d_out)]
                else:
                    m.d.comb += pe.d_in.eq(0)

        for j in range(C):
            m.d.comb += y_out.payload.data[j].eq(
                _delay(m, pes[R - 1][j].d_out, C - 1 - j, f"yskew{j}"))
        m.d.comb += [
            y_out.valid.eq(_delay(m, active, C - 1, "yvalid")),
            y_out.payload.last.eq(_delay(m, active & (cur == R - 1), C - 1, "ylast")),
        ]

