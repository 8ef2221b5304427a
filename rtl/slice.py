"""A register slice for a stream: every output of both sides comes from a register.

Placed between two units, it cuts the combinational paths of a valid/ready handshake: the
consumer's ``ready`` no longer reaches the producer's logic in the same cycle, and the
producer's ``valid`` and payload no longer reach the consumer's. It costs one cycle of
latency and no throughput (one beat per cycle while the consumer takes them).
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["RegisterSlice"]


class RegisterSlice(wiring.Component):
    """Stream register slice (a skid buffer) for payloads of ``shape``.

    ``o.valid`` and ``o.payload`` come from the output register, ``i.ready`` from the skid
    register's valid bit: ``i.ready`` is high while the skid register is empty. A beat
    taken while the output register holds a beat the consumer does not take waits in the
    skid register. Beats leave in order, each once. ``holding`` is high while the slice
    holds a beat.
    """

    def __init__(self, shape):
        self.shape = shape
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
            "holding": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        skid_valid = Signal()
        skid = Signal.like(self.i.payload)
        taken = Signal()
        m.d.comb += [
            self.i.ready.eq(~skid_valid),
            taken.eq(self.o.valid & self.o.ready),
            self.holding.eq(self.o.valid | skid_valid),
        ]
        with m.If(taken):
            m.d.sync += [self.o.valid.eq(skid_valid), self.o.payload.eq(skid),
                         skid_valid.eq(0)]
        with m.If(self.i.valid & self.i.ready):
            # The skid is empty: the beat goes to the output register if that is free at
            # the clock edge, else behind it.
            with m.If(self.o.valid & ~taken):
                m.d.sync += [skid_valid.eq(1), skid.eq(self.i.payload)]
            with m.Else():
                m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(self.i.payload)]
        return m
