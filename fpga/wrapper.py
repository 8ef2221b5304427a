"""A pin-light top for FPGA runs: every core port sits behind a flip-flop.

Neither the array's nor the accelerator's top fits a package's pins at useful sizes, and
unregistered ports would put pad delays into Fmax. :class:`PortWrapper` drives every core
input from a shift register fed by one pin and folds every core output into a signature
register (each bit: its output XOR the next bit) read out through one pin, so all timed
paths are register to register and no logic is left unobserved for the synthesizer to
remove.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Elaboratable, Module, Signal, Value
from amaranth.lib import io, wiring

from llmchip.config import AcceleratorConfig

__all__ = ["PortWrapper", "core_for"]


def core_for(config: AcceleratorConfig, top: str) -> wiring.Component:
    """Return a fresh core component for ``top`` (``"array"`` or ``"accelerator"``).

    Raises
    ------
    ValueError
        If ``top`` is unknown.
    """
    if top == "array":
        from llmchip.rtl.systolic import SystolicArray
        return SystolicArray(config)
    if top == "accelerator":
        from llmchip.rtl.accelerator import Accelerator
        return Accelerator(config)
    raise ValueError(f"top must be one of array, accelerator, not {top!r}")


class PortWrapper(Elaboratable):
    """Serial-in shift register and serial-out signature register around a core.

    Parameters
    ----------
    core : wiring.Component
        The design under test; all of its signature's signals become registered.

    Notes
    -----
    On a board platform the wrapper uses the default clock, button 0 as the serial input
    and LED 0 as the serial output. Without one, ``sin`` and ``sout`` are its ports. The
    core keeps the clock domain's own reset: none on the ULX3S (the registers start from
    their initial values at configuration, and synthesis drops the constant reset) and a
    power-on reset on the iCEBreaker. A reset driven from one fabric register would fan
    out to every flip-flop, and its routing, not the design, would set Fmax.
    ``in_bits``/``out_bits`` give the register counts (the flip-flops the wrapper adds).
    """

    def __init__(self, core: wiring.Component):
        self.core = core
        members = [(path, flow, Value.cast(v)) for path, flow, v in
                   core.signature.flatten(core)]
        # Always-ready streams fix `ready` to a constant: not a port.
        self._inputs = [v for _, member, v in members
                        if member.flow == wiring.In and isinstance(v, Signal)]
        self._outputs = [v for _, member, v in members
                         if member.flow == wiring.Out and isinstance(v, Signal)]
        self.in_bits = sum(len(v) for v in self._inputs)
        self.out_bits = sum(len(v) for v in self._outputs)
        self.sin = Signal()
        self.sout = Signal()

    def elaborate(self, platform):
        m = Module()
        sin, sout = self.sin, self.sout
        if platform is not None:
            m.submodules.sin_buffer = sin_buffer = io.Buffer(
                "i", platform.request("button", 0, dir="-"))
            m.submodules.sout_buffer = sout_buffer = io.Buffer(
                "o", platform.request("led", 0, dir="-"))
            m.d.comb += [sin.eq(sin_buffer.i), sout_buffer.o.eq(sout)]

        shift_in = Signal(self.in_bits)
        m.d.sync += shift_in.eq(Cat(sin, shift_in[:-1]))
        m.submodules.core = self.core
        pos = 0
        for value in self._inputs:
            m.d.comb += value.eq(shift_in[pos:pos + len(value)])
            pos += len(value)

        # A signature register: each bit takes its output XOR its upper neighbour, so every
        # output reaches the pin in time and no control signal fans out to all of them.
        capture = Signal(max(self.out_bits, 1))
        m.d.sync += capture.eq(Cat(*self._outputs) ^ (capture >> 1))
        m.d.comb += sout.eq(capture[0])
        return m
