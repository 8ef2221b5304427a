"""Keep an AXI4 manager port legal when the logic behind it runs under a clock enable.

The accelerator's core runs only in cycles its clock enable is high (the DVFS controller
turns a lower operating point into a pattern of enabled cycles). Its bus must still follow
AXI4 in every cycle of the real clock:

* A manager-driven channel (AW, W, AR) keeps ``valid`` and the payload stable while the
  core is held, as AXI requires. If the subordinate takes the beat in a held cycle, the
  core has not seen the handshake: the bridge remembers it (``taken``), drops ``valid``
  (the beat is delivered) and shows the core ``ready`` in its next enabled cycle, so the
  beat is sent exactly once.
* A subordinate-driven channel (B, R) is accepted only in enabled cycles: ``ready`` goes
  out as the core's ``ready`` and the enable (AXI lets ``ready`` fall at any time).

With the enable always high the bridge is wires: no added latency, so cycle counts at the
highest operating point are those of an accelerator without DVFS.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .axi import AXI4_MANAGER_CHANNELS, AXI4_SUBORDINATE_CHANNELS, axi4_signature

__all__ = ["AxiEnableBridge"]

class AxiEnableBridge(wiring.Component):
    """Connect a clock-enabled AXI4 manager (``core``) to an always-clocked bus (``bus``).

    Parameters
    ----------
    addr_width, data_width, id_width : int
        As :func:`~llmchip.rtl.axi.axi4_signature`.

    Attributes
    ----------
    en : In(1)
        The core's clock enable in this cycle.
    """

    def __init__(self, addr_width: int, data_width: int, id_width: int = 1):
        sig = axi4_signature(addr_width, data_width, id_width)
        super().__init__({"core": In(sig), "bus": Out(sig), "en": In(1)})

    def elaborate(self, platform):
        m = Module()
        core, bus, en = self.core, self.bus, self.en
        for valid, ready, payload in AXI4_MANAGER_CHANNELS:
            taken = Signal(name=f"{valid[:-5]}_taken")
            m.d.comb += [
                getattr(bus, valid).eq(getattr(core, valid) & ~taken),
                getattr(core, ready).eq(getattr(bus, ready) | taken),
                *(getattr(bus, p).eq(getattr(core, p)) for p in payload),
            ]
            m.d.sync += taken.eq(Mux(en, 0, taken | (getattr(bus, valid)
                                                    & getattr(bus, ready))))
        for valid, ready, payload in AXI4_SUBORDINATE_CHANNELS:
            m.d.comb += [
                getattr(core, valid).eq(getattr(bus, valid)),
                getattr(bus, ready).eq(getattr(core, ready) & en),
                *(getattr(core, p).eq(getattr(bus, p)) for p in payload),
            ]
        return m
