"""Post-processor: requantizes rows of int32 accumulator sums to int8 with per-channel scales.

Each lane applies ``clamp(round((wrap32(acc + bias) * mult) / 2**shift) + zero_point)``;
the exact rule is :func:`llmchip.sw.golden.requantize` and ``docs/requant.md``.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .dsp import is_ecp5, registered_product
from .pe import _check_min, _rejected

__all__ = ["PostProcessor"]

#: Largest shift applied; a ``shift`` port value of 63 acts as 62.
MAX_SHIFT = 62


class PostProcessor(wiring.Component):
    """Requantize a stream of accumulator rows, one row per cycle.

    Per lane ``k`` of a row (all arithmetic exact unless stated):

    1. ``x = wrap32(acc[k] + bias[k])``: ``acc`` sign-extended to 32 bits, the sum wrapped
       to signed 32 bits;
    2. ``p = x * mult[k]`` (signed 63 bits, never overflows);
    3. ``y = p`` if ``s == 0``, else ``(p + 2**(s-1)) >> s`` (arithmetic shift: rounds to
       nearest, ties toward +infinity), with ``s = min(shift[k], 62)``;
    4. ``o = clamp(y + zero_point, lo, 2**(out_width-1) - 1)`` where ``lo`` is
       ``zero_point`` with ``relu`` set, else ``-2**(out_width-1)``.

    Parameters
    ----------
    lanes : int
        Values per row (the array's column count), at least 1.
    acc_width : int
        Width of the signed accumulator inputs, 2 to 32.
    out_width : int
        Width of the signed outputs and of ``zero_point``, 2 to 32.

    Raises
    ------
    ValueError
        If a parameter is not an int in its range.

    Notes
    -----
    Ports:

    * ``i``: stream of ``{"data": lanes x signed(acc_width), "last": 1}``;
    * ``o``: stream of ``{"data": lanes x signed(out_width), "last": 1}``; ``last`` is
      copied from the row's input beat;
    * ``bias`` (``lanes x signed(32)``), ``mult`` (``lanes x unsigned(31)``), ``shift``
      (``lanes x unsigned(6)``), ``zero_point`` (``signed(out_width)``), ``relu`` (1):
      plain inputs, read while a row passes through the pipeline, so they must be held
      stable from the cycle a row is accepted on ``i`` until it is taken from ``o``.

    Timing: a ten-stage pipeline (bias add | the multipliers' operands | four 16 x 16
    partial products, one hard multiplier each | the products copied into fabric
    registers | their sum | the shift by whole bytes | the shift by the remaining 0 to 7
    bits | the rounding increment | the zero point | saturation), every stage registered,
    so no stage holds more than one multiplier, three levels of a shifter or one wide
    carry chain with a little logic. The multipliers' operand and
    product stages are the hard multipliers' own registers on ECP5
    (:func:`~llmchip.rtl.dsp.registered_product`), so the paths into and out of the DSP
    column are routing alone (the copy takes the route from a far multiplier out of the
    sum's stage). With ``o.ready`` high, a row accepted on ``i`` in cycle ``t`` is valid
    on ``o`` in cycle ``t + 10`` (:attr:`latency`), and a row is accepted every cycle.
    ``o.valid`` comes straight from a register.
    ``i.ready`` is low only while all ten stages hold rows and ``o.ready`` is low, so it
    depends combinationally on ``o.ready``; a client that never stalls ``o`` (``o.ready``
    tied high) gets a pipeline without that chain. While ``o`` is stalled, its row stays
    unchanged and the stages behind it keep their rows and fill their gaps, so no row is
    lost or repeated.
    """

    #: Cycles from a row's acceptance on ``i`` to its appearance on ``o``, unstalled.
    latency = 10

    def __init__(self, lanes: int, acc_width: int = 32, out_width: int = 8):
        _check_min(self, "lanes", lanes, 1)
        for name, value in (("acc_width", acc_width), ("out_width", out_width)):
            if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 32:
                raise _rejected(self, ValueError(
                    f"{name} must be an int between 2 and 32, not {value!r}"))
        self.lanes = lanes
        self.acc_width = acc_width
        self.out_width = out_width
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(signed(acc_width), lanes), "last": 1}))),
            "o": Out(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(signed(out_width), lanes), "last": 1}))),
            "bias": In(data.ArrayLayout(signed(32), lanes)),
            "mult": In(data.ArrayLayout(unsigned(31), lanes)),
            "shift": In(data.ArrayLayout(unsigned(6), lanes)),
            "zero_point": In(signed(out_width)),
            "relu": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.latency

        # Stage k (1..n) holds a row when valid[k] is high; it loads from stage k-1 when it
        # is empty or its own row moves on, so bubbles close up behind a stall.
        valid = [self.i.valid] + [Signal(name=f"valid{k}") for k in range(1, n + 1)]
        load = [Signal(name=f"load{k}") for k in range(n + 2)]
        m.d.comb += load[n + 1].eq(self.o.ready)
        for k in range(n, 0, -1):
            m.d.comb += load[k].eq(~valid[k] | load[k + 1])
        m.d.comb += [self.i.ready.eq(load[1]), self.o.valid.eq(valid[n])]

        last = [self.i.payload.last] + [Signal(name=f"last{k}") for k in range(1, n + 1)]
        for k in range(1, n + 1):
            with m.If(load[k]):
                m.d.sync += [valid[k].eq(valid[k - 1]), last[k].eq(last[k - 1])]
        m.d.comb += self.o.payload.last.eq(last[n])

        ow = self.out_width
        hi = (1 << (ow - 1)) - 1
        lo_min = -(1 << (ow - 1))
        # Parameters are stable from a row's acceptance until it leaves, and each stage
        # reads them at least one cycle after the acceptance: so they are registered on
        # the way in (no logic between the holding registers and a stage's arithmetic, and
        # the multiplier operands can sit in the hard multipliers' input registers).
        zp = Signal(signed(ow))
        lo = Signal(signed(ow))
        # zero_point is an out_width-bit value, so it is already >= lo_min.
        m.d.sync += [zp.eq(self.zero_point), lo.eq(Mux(self.relu, self.zero_point, lo_min))]

        ecp5 = is_ecp5(platform)
        for j in range(self.lanes):
            x = Signal(signed(32), name=f"x{j}")
            s = Signal(range(MAX_SHIFT + 1), name=f"s{j}")   # read by stages 6 and 7
            m.d.sync += s.eq(Mux(self.shift[j] > MAX_SHIFT, MAX_SHIFT, self.shift[j]))
            # x * mult = (xh * 2**16 + xl) * (mh * 2**16 + ml), each factor at most 17 bits
            # signed: one 18 x 18 multiplier per partial product. Its operand registers
            # load x as stage 2 and the multiplier every cycle (it is stable while a row
            # is in the pipeline); its product register is stage 3.
            xl, xh = x[:16], x[16:].as_signed()
            ml, mh = self.mult[j][:16], self.mult[j][16:]
            pp = {}
            for part, (xf, mf) in {"ll": (xl, ml), "lh": (xl, mh), "hl": (xh, ml),
                                   "hh": (xh, mh)}.items():
                pp[part] = registered_product(m, xf, mf, name=f"pp_{part}{j}", ecp5=ecp5,
                                              a_en=load[2], p_en=load[3])
            p = Signal(signed(63), name=f"p{j}")
            y = Signal(signed(63), name=f"y{j}")
            twice = Signal(signed(64), name=f"twice{j}")
            coarse = Signal(signed(64), name=f"coarse{j}")
            shifted = Signal(signed(64), name=f"shifted{j}")
            z = Signal(signed(64), name=f"z{j}")
            fits = Signal(name=f"fits{j}")
            narrow = Signal(signed(self.out_width), name=f"narrow{j}")
            out = Signal(signed(self.out_width), name=f"out{j}")
            m.d.comb += [
                # floor((p + 2**(s-1)) / 2**s) == floor((floor(2p / 2**s) + 1) / 2), and
                # for s == 0 this is (2p + 1) >> 1 == p: one shifter, no rounding constant.
                twice.eq(p << 1),
                fits.eq(z[ow - 1:].all() | ~z[ow - 1:].any()),
                narrow.eq(z[:ow]),
            ]
            with m.If(load[1]):
                # Assigning to 32 bits drops the carry: the int32 wraparound.
                m.d.sync += x.eq(self.i.payload.data[j] + self.bias[j])
            near = {part: Signal.like(v, name=f"pp_{part}{j}_q") for part, v in pp.items()}
            with m.If(load[4]):
                m.d.sync += [near[part].eq(pp[part]) for part in pp]
            with m.If(load[5]):
                m.d.sync += p.eq((near["hh"] << 32) + ((near["lh"] + near["hl"]) << 16)
                                 + near["ll"])
            with m.If(load[6]):
                m.d.sync += coarse.eq(twice >> Cat(Const(0, 3), s[3:]))
            with m.If(load[7]):
                m.d.sync += shifted.eq(coarse >> s[:3])
            with m.If(load[8]):
                m.d.sync += y.eq((shifted + 1) >> 1)
            with m.If(load[9]):
                # |y| < 2**62 and |zero_point| <= 2**31: no wrap in 64 bits.
                m.d.sync += z.eq(y + zp)
            with m.If(load[10]):
                # z fits in out_width bits iff its top 65 - out_width bits are all equal;
                # otherwise its sign says which bound it is past (lo >= the minimum).
                m.d.sync += out.eq(Mux(fits, Mux(narrow < lo, lo, narrow),
                                       Mux(z[-1], lo, hi)))
            m.d.comb += self.o.payload.data[j].eq(out)
        return m
