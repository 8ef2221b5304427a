"""A multiply with a register on each side: in a hard multiplier's own registers on ECP5,
in fabric registers elsewhere, cycle for cycle the same.

Multipliers outside the array (the requantizer's partial products, the operand checks'
spans) sit in the DSP column, often far from the logic that feeds them. With their
operands and product in the DSP's registers, each timed path to or from a multiplier is
routing alone.
"""

from amaranth.hdl import ClockSignal, Const, Instance, Module, Signal, Value, signed

__all__ = ["is_ecp5", "registered_product", "ECP5_MULT_WIDTH"]

#: Operand width of an ECP5 MULT18X18D (two's complement).
ECP5_MULT_WIDTH = 18


def is_ecp5(platform) -> bool:
    """True when ``platform`` builds for an ECP5 part (its MULT18X18D can be used)."""
    return getattr(platform, "family", None) == "ecp5"


def _signed_width(value: Value) -> int:
    """Bits ``value`` takes as a two's complement number."""
    shape = value.shape()
    return shape.width + (0 if shape.signed else 1)


def registered_product(m: Module, a: Value, b: Value, *, name: str, ecp5: bool = False,
                       a_en: Value | int = 1, b_en: Value | int = 1,
                       p_en: Value | int = 1) -> Value:
    """Return ``a * b`` two register stages after its operands.

    The operand registers load ``a`` when ``a_en`` is high and ``b`` when ``b_en`` is high;
    the product register loads their product when ``p_en`` is high. The result is as
    wide as the exact product (``len(a) + len(b)`` bits, signed if either operand is).

    With ``ecp5`` and both operands within 18 bits as two's complement numbers, all three
    registers are a MULT18X18D's own (operands sign- or zero-extended to 18 bits, a
    signed multiply). In neither case do the registers reset: the DSP's start from zero
    at configuration, the fabric ones from their ``init`` of 0, and neither follows the
    domain's reset (nor a soft reset), so a client must not read a product it has not
    loaded since.

    Parameters
    ----------
    m : Module
        The module to build in (sync domain).
    a, b : Value
        The operands, as they are before their registers.
    name : str
        Prefix of the signals and of the DSP instance.
    ecp5 : bool
        Use the ECP5 MULT18X18D's registers (see :func:`is_ecp5`).
    a_en, b_en, p_en : Value or int
        Load enables of the operand and product registers.
    """
    a, b = Value.cast(a), Value.cast(b)
    is_signed = a.shape().signed or b.shape().signed
    width = len(a) + len(b)
    product = Signal(signed(width) if is_signed else width, name=f"{name}_p",
                     reset_less=True)
    fits = max(_signed_width(a), _signed_width(b)) <= ECP5_MULT_WIDTH
    if ecp5 and fits:
        a18 = Signal(signed(ECP5_MULT_WIDTH), name=f"{name}_dsp_a")
        b18 = Signal(signed(ECP5_MULT_WIDTH), name=f"{name}_dsp_b")
        p36 = Signal(2 * ECP5_MULT_WIDTH, name=f"{name}_dsp_p")
        m.d.comb += [a18.eq(a), b18.eq(b), product.eq(p36[:width])]
        ports = {f"i_A{i}": a18[i] for i in range(ECP5_MULT_WIDTH)}
        ports.update({f"i_B{i}": b18[i] for i in range(ECP5_MULT_WIDTH)})
        ports.update({f"i_C{i}": Const(0) for i in range(ECP5_MULT_WIDTH)})
        ports.update({f"o_P{i}": p36[i] for i in range(2 * ECP5_MULT_WIDTH)})
        m.submodules[f"{name}_dsp"] = Instance(
            "MULT18X18D",
            p_REG_INPUTA_CLK="CLK0", p_REG_INPUTA_CE="CE0", p_REG_INPUTA_RST="RST0",
            p_REG_INPUTB_CLK="CLK0", p_REG_INPUTB_CE="CE1", p_REG_INPUTB_RST="RST0",
            p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE2", p_REG_OUTPUT_RST="RST0",
            p_GSR="DISABLED", p_RESETMODE="SYNC",
            i_SIGNEDA=Const(1), i_SIGNEDB=Const(1), i_SOURCEA=Const(0), i_SOURCEB=Const(0),
            i_CLK0=ClockSignal(), i_CLK1=Const(0), i_CLK2=Const(0), i_CLK3=Const(0),
            i_CE0=a_en, i_CE1=b_en, i_CE2=p_en, i_CE3=Const(0),
            i_RST0=Const(0), i_RST1=Const(0), i_RST2=Const(0), i_RST3=Const(0),
            **ports)
        return product
    a_reg = Signal(a.shape(), name=f"{name}_a", reset_less=True)
    b_reg = Signal(b.shape(), name=f"{name}_b", reset_less=True)
    for reg, value, en in ((a_reg, a, a_en), (b_reg, b, b_en), (product, a_reg * b_reg, p_en)):
        if isinstance(en, int):
            if en:
                m.d.sync += reg.eq(value)
        else:
            with m.If(en):
                m.d.sync += reg.eq(value)
    return product
