"""Processing elements: the signed multiply-accumulate cells of the systolic array.

Two variants share :class:`PE`, chosen by the dataflow:

* ``"ws"`` (weight-stationary): holds an *active* weight used by the multiplier and a
  *shadow* weight that belongs to a vertical shift chain, so the next weight tile loads
  while the current one computes. A ``sw`` flag travelling with the activation copies
  shadow to active exactly when the first activation of the next tile arrives.
* ``"os"`` (output-stationary): accumulates ``a * b`` in place; ``first`` restarts the sum,
  ``last`` copies the finished sum into a *shadow* output register that belongs to a
  vertical drain chain, so the next tile accumulates while the previous one drains.

:class:`PackedPair` is two weight-stationary PEs of adjacent columns sharing one wide
multiply (``mult="packed"``). The product is either a plain ``*`` (mapped by the
synthesizer, usually to a hard multiplier) or radix-4 Booth logic (``mult="lut"``), and
the ``pipeline`` option adds product and split-accumulation registers.

All outputs are registered; products are exact and sums wrap at ``acc_width`` bits.
"""

from __future__ import annotations

from amaranth.hdl import (
    Cat,
    Module,
    Mux,
    Signal,
    Value,
    signed,
)
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from llmchip.config import DATAFLOWS, PIPELINES

from .dsp import is_ecp5, registered_product

__all__ = ["PE", "PackedPair", "PE_MULTS", "booth_product"]

#: Multiplier implementations of one PE (``"auto"``/``"hybrid"`` resolve to these per PE).
PE_MULTS = ("dsp", "lut")


def _rejected(component, exc: Exception) -> Exception:
    """Mark a component whose constructor failed as deliberately unused, return ``exc``.

    Amaranth warns about every elaboratable that is never elaborated, including one whose
    ``__init__`` raised; that warning would only repeat the error being raised.
    """
    component._MustUse__silence = True
    return exc


def _check_min(component, name: str, value, lo: int) -> None:
    """Raise (via :func:`_rejected`) unless ``value`` is an int >= ``lo``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise _rejected(component, ValueError(f"{name} must be an int >= {lo}, not {value!r}"))


def _check_choice(component, name: str, value, choices) -> None:
    if value not in choices:
        raise _rejected(component, ValueError(
            f"{name} must be one of {', '.join(choices)}, not {value!r}"))


def booth_product(a: Value, b: Value) -> Value:
    """Return the exact signed product ``a * b`` built from radix-4 Booth logic.

    No multiply operator appears, so no synthesizer maps it to a hard multiplier: each
    pair of ``b``'s bits selects ``0, ±a, ±2a`` (a one's complement plus a carry-in bit
    for the negative digits), and the ``ceil(width/2) + 1`` addends are summed in a
    balanced tree.

    Parameters
    ----------
    a, b : Value
        Signed operands of the same width ``n``.

    Returns
    -------
    Value
        The signed ``2 * n``-bit product.
    """
    n = len(a)
    digits = (n + 1) // 2
    bx = b.as_signed()
    bits = [Value.cast(0)] + [bx[min(i, n - 1)] for i in range(2 * digits)]  # b[-1] = 0
    addends = []
    negs = []
    for i in range(digits):
        lo, mid, hi = bits[2 * i], bits[2 * i + 1], bits[2 * i + 2]
        one = mid ^ lo
        two = (hi & ~mid & ~lo) | (~hi & mid & lo)
        mag = Mux(two, a.as_signed() << 1, Mux(one, a.as_signed(), 0))
        # -mag = ~mag + 1: the +1 goes into the separate carry word below.
        addends.append(Mux(hi, ~mag, mag).as_signed() << (2 * i))
        negs += [hi, Value.cast(0)]
    addends.append(Cat(*negs))
    while len(addends) > 1:
        addends = [addends[i] + addends[i + 1] if i + 1 < len(addends) else addends[i]
                   for i in range(0, len(addends), 2)]
    return addends[0][:2 * n].as_signed()


def _product(mult: str, a: Value, b: Value) -> Value:
    return booth_product(a, b) if mult == "lut" else a * b


def _operand(m: Module, source: Value, current: Value, pipeline: str, name: str) -> Value:
    """Return the register to multiply: ``current``, or with ``"mult"`` a private copy.

    The copy is loaded from ``source`` on the same edge as ``current`` (no extra latency)
    but drives only the multiplier, so placement can put it beside a hard multiplier
    that sits far from the rest of the PE. It has no reset, which also keeps synthesis
    from merging it with ``current``.
    """
    if "mult" not in pipeline:
        return current
    copy = Signal.like(current, name=f"{name}_mul", reset_less=True)
    m.d.sync += copy.eq(source)
    return copy


def _uses_ecp5_dsp_registers(platform, mult: str, pipeline: str, width: int) -> bool:
    """True when a registered product can use an ECP5 MULT18X18D's own registers.

    Cycle for cycle the same as the portable ``"mult"`` pipeline: the A register loads
    the PE's next activation every cycle (its private operand copy), the B register the
    next weight when the weights switch, and the product register holds the product one
    edge later. Until the first weight switch the DSP registers hold zeros from
    configuration, and the array feeds zero activations while idle, so no stale product
    reaches a valid output row.
    """
    return is_ecp5(platform) and mult == "dsp" and "mult" in pipeline and width <= 18


def _product_regs(pipeline: str) -> int:
    """Registers between the multiplier and the accumulate adder (0, 1 or 2)."""
    return 2 if "mult2" in pipeline else int("mult" in pipeline)


def _accumulate(m: Module, psum_in: Value, psum_out: Value, product: Value, pipeline: str,
                name: str, registered: bool = False) -> None:
    """Register ``psum_out = psum_in + product`` (wrapping), pipelined as ``pipeline`` says.

    With ``"mult"`` (``"mult2"``) the product is registered once (twice) first; a
    ``registered`` multiplier already holds the first of those registers. With ``"acc"``
    the sum is split at half the accumulator width: the low half is added on this edge
    and the high half, with the carry, on the next, so ``psum_in``/``psum_out`` carry
    their high half one cycle behind the low half (the array aligns them again at its
    output).
    """
    width = len(psum_out)
    for stage in range(_product_regs(pipeline) - registered):
        reg = Signal(signed(len(product)), name=f"{name}_prod{stage}")
        m.d.sync += reg.eq(product)
        product = reg
    wide = Signal(signed(width), name=f"{name}_ext")
    m.d.comb += wide.eq(product)
    if "acc" not in pipeline:
        m.d.sync += psum_out.eq(psum_in + wide)
        return
    half = width // 2
    low = Signal(half + 1, name=f"{name}_low")
    carry = Signal(name=f"{name}_carry")
    high = Signal(width - half, name=f"{name}_high")
    m.d.comb += low.eq(psum_in[:half] + wide[:half])
    m.d.sync += [
        psum_out[:half].eq(low[:half]),
        carry.eq(low[half]),
        high.eq(wide[half:]),
        psum_out[half:].eq(psum_in[half:] + high + carry),
    ]


class PE(wiring.Component):
    """One processing element.

    Parameters
    ----------
    dataflow : {"ws", "os"}
    in_width, acc_width : int
        Operand and accumulator widths in bits (signed).
    mult : {"dsp", "lut"}
        Plain product (mapped by the synthesizer) or radix-4 Booth logic.
    pipeline : {"none", "mult", "mult2", "acc", "mult+acc", "mult2+acc"}
        Extra registers (see :class:`~llmchip.config.AcceleratorConfig`); ``"acc"`` is
        weight-stationary only. Each stage delays ``psum_out`` (``d_out``) by one cycle.
        Elaborated for an ECP5 platform, a ``"dsp"`` weight-stationary PE with product
        registers uses the MULT18X18D's own input and output registers.

    Raises
    ------
    ValueError
        If the dataflow, ``mult`` or ``pipeline`` is unknown or a width is not positive.

    Notes
    -----
    Ports, ``"ws"``: ``a_in``/``sw_in`` -> ``a_out``/``sw_out`` (the activation register,
    passed right); ``psum_in`` -> ``psum_out`` (``psum_in + a * active``, passed down);
    ``w_in``/``wen_in`` -> ``w_out`` (the shadow register, passed down) and ``wen_out``
    (``wen_in`` delayed one cycle, passed right).

    Ports, ``"os"``: ``a_in``/``first_in``/``last_in`` -> ``a_out``/``first_out``/
    ``last_out`` (passed right); ``b_in`` -> ``b_out`` (passed down); ``d_in``/``den_in``
    -> ``d_out`` (the shadow output register, passed down) and ``den_out`` (passed right).
    """

    def __init__(self, dataflow: str = "ws", in_width: int = 8, acc_width: int = 32, *,
                 mult: str = "dsp", pipeline: str = "none"):
        if dataflow not in DATAFLOWS:
            raise _rejected(self, ValueError(
                f"dataflow must be one of {', '.join(DATAFLOWS)}, not {dataflow!r}"))
        _check_min(self, "in_width", in_width, 1)
        _check_min(self, "acc_width", acc_width, 1)
        _check_choice(self, "mult", mult, PE_MULTS)
        _check_choice(self, "pipeline", pipeline,
                      PIPELINES if dataflow == "ws" else ("none", "mult", "mult2"))
        self.dataflow = dataflow
        self.in_width = in_width
        self.acc_width = acc_width
        self.mult = mult
        self.pipeline = pipeline
        op, acc = signed(in_width), signed(acc_width)
        if dataflow == "ws":
            ports = {
                "a_in": In(op), "sw_in": In(1), "a_out": Out(op), "sw_out": Out(1),
                "psum_in": In(acc), "psum_out": Out(acc),
                "w_in": In(op), "wen_in": In(1), "w_out": Out(op), "wen_out": Out(1),
            }
        else:
            ports = {
                "a_in": In(op), "first_in": In(1), "last_in": In(1),
                "a_out": Out(op), "first_out": Out(1), "last_out": Out(1),
                "b_in": In(op), "b_out": Out(op),
                "d_in": In(acc), "den_in": In(1), "d_out": Out(acc), "den_out": Out(1),
            }
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        if self.dataflow == "ws":
            self._elaborate_ws(m, platform)
        else:
            self._elaborate_os(m)
        return m

    def _elaborate_ws(self, m: Module, platform) -> None:
        m.d.sync += [
            self.a_out.eq(self.a_in),
            self.sw_out.eq(self.sw_in),
            self.wen_out.eq(self.wen_in),
        ]
        # a_out holds the activation being multiplied this cycle; active was switched on
        # the same edge that loaded it, so the first beat of a tile sees new weights.
        if _uses_ecp5_dsp_registers(platform, self.mult, self.pipeline, self.in_width):
            product = registered_product(m, self.a_in, self.w_out, b_en=self.sw_in,
                                         name="mac", ecp5=True)
            _accumulate(m, self.psum_in, self.psum_out, product, self.pipeline, "mac",
                        registered=True)
        else:
            active = Signal(signed(self.in_width))
            with m.If(self.sw_in):
                m.d.sync += active.eq(self.w_out)
            a = _operand(m, self.a_in, self.a_out, self.pipeline, "a")
            _accumulate(m, self.psum_in, self.psum_out, _product(self.mult, a, active),
                        self.pipeline, "mac")
        with m.If(self.wen_in):
            m.d.sync += self.w_out.eq(self.w_in)

    def _elaborate_os(self, m: Module) -> None:
        acc = Signal(signed(self.acc_width))
        total = Signal(signed(self.acc_width))
        product = _product(self.mult, _operand(m, self.a_in, self.a_out, self.pipeline, "a"),
                           _operand(m, self.b_in, self.b_out, self.pipeline, "b"))
        first, last = self.first_out, self.last_out
        for stage in range(_product_regs(self.pipeline)):
            # The product is registered, so the flags that frame the sum wait with it.
            reg = Signal(signed(2 * self.in_width), name=f"prod{stage}")
            first_d, last_d = Signal(name=f"first{stage}"), Signal(name=f"last{stage}")
            m.d.sync += [reg.eq(product), first_d.eq(first), last_d.eq(last)]
            product, first, last = reg, first_d, last_d
        m.d.comb += total.eq(Mux(first, 0, acc) + product)
        m.d.sync += [
            self.a_out.eq(self.a_in),
            self.first_out.eq(self.first_in),
            self.last_out.eq(self.last_in),
            self.b_out.eq(self.b_in),
            self.den_out.eq(self.den_in),
            acc.eq(total),
        ]
        # A tile's final sum and a drain shift never meet in one PE on the same edge: the
        # array spaces tile ends at least `rows` beats apart (see SystolicArray).
        with m.If(last):
            m.d.sync += self.d_out.eq(total)
        with m.Elif(self.den_in):
            m.d.sync += self.d_out.eq(self.d_in)


class PackedPair(wiring.Component):
    """Two weight-stationary PEs of adjacent columns ``j, j + 1`` sharing one multiply.

    Both columns run on column ``j + 1``'s schedule: the pair registers its inputs once,
    so the activation it multiplies is the one column ``j + 1`` would see, and the left
    column's weights arrive one cycle later than a plain column ``j`` (the array skews
    them by ``j + 1``) and its sums leave one cycle later (the array de-skews them by one
    less). The two stationary weights form one operand ``w_hi * 2**S + w_lo`` with
    ``S = 2 * in_width``; ``a * (w_hi * 2**S + w_lo)`` holds ``a * w_lo`` in its low
    ``S`` bits (signed) and ``a * w_hi`` above, plus one when the low product is negative.
    For int8 that is a 25 x 8-bit multiply: one DSP48E1.

    Parameters
    ----------
    in_width, acc_width : int
    pipeline : {"none", "mult", "mult2", "acc", "mult+acc", "mult2+acc"}
        As for :class:`PE`; the product registers hold the two separated products.

    Raises
    ------
    ValueError
        If ``pipeline`` is unknown or a width is not positive.

    Notes
    -----
    Ports: ``a_in``/``sw_in``/``wen_in`` on column ``j``'s schedule and ``a_out``/
    ``sw_out``/``wen_out`` on column ``j + 2``'s; ``w_in``/``w_out`` and ``psum_in``/
    ``psum_out`` are two-lane arrays (lane 0 is column ``j``), all on column ``j + 1``'s.
    """

    def __init__(self, in_width: int = 8, acc_width: int = 32, *, pipeline: str = "none"):
        _check_min(self, "in_width", in_width, 1)
        _check_min(self, "acc_width", acc_width, 1)
        _check_choice(self, "pipeline", pipeline, PIPELINES)
        self.in_width = in_width
        self.acc_width = acc_width
        self.pipeline = pipeline
        op, acc = signed(in_width), signed(acc_width)
        super().__init__({
            "a_in": In(op), "sw_in": In(1), "wen_in": In(1),
            "a_out": Out(op), "sw_out": Out(1), "wen_out": Out(1),
            "w_in": In(data.ArrayLayout(op, 2)), "w_out": Out(data.ArrayLayout(op, 2)),
            "psum_in": In(data.ArrayLayout(acc, 2)), "psum_out": Out(data.ArrayLayout(acc, 2)),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.in_width
        shift = 2 * n
        a1 = Signal(signed(n))     # column j+1's a_in
        sw1, wen1 = Signal(), Signal()
        m.d.sync += [
            a1.eq(self.a_in), sw1.eq(self.sw_in), wen1.eq(self.wen_in),
            self.a_out.eq(a1), self.sw_out.eq(sw1), self.wen_out.eq(wen1),
        ]
        packed = Signal(signed(n + shift + 1))
        with m.If(sw1):
            m.d.sync += packed.eq((self.w_out[1] << shift) + self.w_out[0])
        with m.If(wen1):
            m.d.sync += self.w_out.eq(self.w_in)

        wide = Signal(signed(n + len(packed)))
        m.d.comb += wide.eq(_operand(m, a1, self.a_out, self.pipeline, "a") * packed)
        lo = Signal(signed(shift))
        hi = Signal(signed(shift))
        m.d.comb += [lo.eq(wide[:shift].as_signed()),
                     hi.eq(wide[shift:].as_signed() + wide[shift - 1])]
        for lane, product in enumerate((lo, hi)):
            _accumulate(m, self.psum_in[lane], self.psum_out[lane], product, self.pipeline,
                        f"mac{lane}")
        return m
