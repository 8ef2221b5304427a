"""A register slice for a stream: every output of both sides comes from a register.

Placed between two units, it cuts the combinational paths of a valid/ready handshake: the
consumer's ``ready`` no longer reaches the producer's logic in the same cycle, and the
producer's ``valid`` and payload no longer reach the consumer's. It costs one cycle of
latency and no throughput (one beat per cycle while the consumer takes them).

:class:`AxiRegisterSlice` puts one on every channel of an AXI4 port.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .axi import AXI4_MANAGER_CHANNELS, AXI4_SUBORDINATE_CHANNELS, axi4_signature

__all__ = ["AxiRegisterSlice", "DataDoneSlices", "RegisterSlice"]


class RegisterSlice(wiring.Component):
    """Stream register slice (a skid buffer) for payloads of ``shape``.

    ``o.valid`` and ``o.payload`` come from the output register, ``i.ready`` from the skid
    register's valid bit: ``i.ready`` is high while the skid register is empty. A beat
    taken while the output register holds a beat the consumer does not take waits in the
    skid register. Beats leave in order, each once. ``holding`` is high while the slice
    holds a beat. ``o.payload`` is meaningful only while ``o.valid`` is high (an empty
    register loads whatever is on ``i.payload``).

    With ``last`` naming a one-bit field of the payload (a command's last data beat, say),
    ``holding_last`` is high while a held beat has that field set: a completion that must
    not overtake its command's data waits for it to be low.
    """

    def __init__(self, shape, *, last: str | None = None):
        self.shape = shape
        self.last = last
        members = {
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
            "holding": Out(1),
        }
        if last is not None:
            members["holding_last"] = Out(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        skid_valid = Signal()
        skid = Signal.like(self.i.payload)
        m.d.comb += [
            self.i.ready.eq(~skid_valid),
            self.holding.eq(self.o.valid | skid_valid),
        ]
        if self.last is not None:
            out_last = getattr(self.o.payload, self.last)
            skid_last = getattr(skid, self.last)
            m.d.comb += self.holding_last.eq((self.o.valid & out_last)
                                             | (skid_valid & skid_last))
        # A register whose valid bit is low at the clock edge loads the input's payload
        # whether or not a beat is offered: its valid bit says whether it took one. So
        # the payload registers' enables follow from the consumer's `ready` and this
        # slice's own registers, never from the producer's `valid` (a wide payload's
        # enable is a large fan-out, and the producer's decision is often late).
        with m.If(~self.o.valid | self.o.ready):
            # The output register is free at the edge: the held beat moves up, or else
            # the input's (the skid is empty, so `i.ready` is high).
            with m.If(skid_valid):
                m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(skid), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.o.valid.eq(self.i.valid), self.o.payload.eq(self.i.payload)]
        with m.Elif(~skid_valid):
            # The output register holds a beat the consumer does not take: an offered
            # beat waits behind it.
            m.d.sync += [skid_valid.eq(self.i.valid), skid.eq(self.i.payload)]
        return m


class DataDoneSlices(wiring.Component):
    """Register slices for a stream of data beats and the stream of their completions.

    Each command's data ends with a beat whose ``last`` field is set, and its completion
    comes on ``done_i`` only after that beat was taken (a DMA read engine's contract). Both
    streams pass a :class:`RegisterSlice`; a completion enters its slice only while the data
    slice holds no ``last`` beat, so the consumer never sees a completion before the data of
    its command (a command without data, one refused for an error, completes as before).
    ``holding`` is high while either slice holds something.
    """

    def __init__(self, data_shape, done_shape, *, last: str = "last"):
        self._data = RegisterSlice(data_shape, last=last)
        self._done = RegisterSlice(done_shape)
        super().__init__({
            "data_i": In(stream.Signature(data_shape)),
            "data_o": Out(stream.Signature(data_shape)),
            "done_i": In(stream.Signature(done_shape)),
            "done_o": Out(stream.Signature(done_shape)),
            "holding": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.data = data = self._data
        m.submodules.done = done = self._done
        wiring.connect(m, wiring.flipped(self.data_i), data.i)
        wiring.connect(m, data.o, wiring.flipped(self.data_o))
        wiring.connect(m, done.o, wiring.flipped(self.done_o))
        m.d.comb += [
            done.i.valid.eq(self.done_i.valid & ~data.holding_last),
            done.i.payload.eq(self.done_i.payload),
            self.done_i.ready.eq(done.i.ready & ~data.holding_last),
            self.holding.eq(data.holding | done.holding),
        ]
        return m


class AxiRegisterSlice(wiring.Component):
    """A :class:`RegisterSlice` on each of the five channels between an AXI4 manager
    (``manager``, the port it drives) and the bus (``bus``).

    Every signal of either side comes from a register, so the subordinate's ``ready`` and
    ``valid`` reach none of the manager's logic in the same cycle. Each channel takes one
    more cycle and keeps its throughput; the order of beats on a channel is unchanged.
    ``holding`` is high while a slice holds a beat.
    """

    def __init__(self, addr_width: int, data_width: int, id_width: int = 1):
        sig = axi4_signature(addr_width, data_width, id_width)
        super().__init__({"manager": In(sig), "bus": Out(sig), "holding": Out(1)})

    def elaborate(self, platform):
        m = Module()
        holding = []
        for src, dst, channels in ((self.manager, self.bus, AXI4_MANAGER_CHANNELS),
                                   (self.bus, self.manager, AXI4_SUBORDINATE_CHANNELS)):
            for valid, ready, payload in channels:
                fields = [getattr(src, p) for p in payload]
                width = sum(len(f) for f in fields)
                piece = RegisterSlice(unsigned(width))
                m.submodules[valid[:-5]] = piece
                m.d.comb += [
                    piece.i.valid.eq(getattr(src, valid)),
                    getattr(src, ready).eq(piece.i.ready),
                    piece.i.payload.eq(Cat(*fields)),
                    getattr(dst, valid).eq(piece.o.valid),
                    piece.o.ready.eq(getattr(dst, ready)),
                    Cat(*(getattr(dst, p) for p in payload)).eq(piece.o.payload),
                ]
                holding.append(piece.holding)
        m.d.comb += self.holding.eq(Cat(*holding).any())
        return m
