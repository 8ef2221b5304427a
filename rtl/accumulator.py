"""Accumulator: int32 SRAM rows with accumulate-on-write, for splitting K across tiles.

A write either overwrites a row or adds to it lane by lane (two's-complement wraparound
at ``acc_width`` bits). The add is a read-modify-write pipelined over three cycles: the
read, a register right behind the block RAM, then the add and the write. The rows written
in the two cycles before an add are forwarded to it, so back-to-back writes to the same
row (a batch-1 GEMV accumulating over K on a 1-row array) see each other. Two writers share the
pipeline: ``w`` (the array's results, which cannot wait) has priority over ``l`` (rows
loaded from DRAM). A separate read port ``r_req``/``r_resp`` serves the store unit with
``READ_LATENCY`` (2) cycles of latency: its block RAM's output goes into a register.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .pe import _check_min, _rejected

__all__ = ["Accumulator", "write_layout"]


def write_layout(lanes: int, rows: int, acc_width: int = 32) -> data.StructLayout:
    """Payload of a write: row address, lane values, and whether to add or overwrite."""
    return data.StructLayout({
        "addr": unsigned(max(1, (rows - 1).bit_length())),
        "data": data.ArrayLayout(signed(acc_width), lanes),
        "accumulate": 1,
    })


class Accumulator(wiring.Component):
    """``rows`` rows of ``lanes`` signed ``acc_width``-bit values.

    Parameters
    ----------
    lanes : int
        Values per row (the array's columns), >= 1.
    rows : int
        Rows, a power of two >= 2.
    acc_width : int
        Bits per value (32).

    Raises
    ------
    ValueError
        If a parameter is out of range, naming it.

    Notes
    -----
    A write accepted in cycle ``t`` is visible to reads accepted in cycle
    ``t + WRITE_LATENCY`` and later (and to accumulating writes from cycle ``t + 1`` on).
    """

    #: Cycles from a write's acceptance until a read accepted then sees it.
    WRITE_LATENCY = 3
    #: Cycles from a read request to its response on ``r_resp``.
    READ_LATENCY = 2

    def __init__(self, lanes: int, rows: int, acc_width: int = 32):
        for name, value, lo in (("lanes", lanes, 1), ("rows", rows, 2),
                                ("acc_width", acc_width, 2)):
            _check_min(self, name, value, lo)
        if rows & (rows - 1):
            raise _rejected(self, ValueError(f"rows must be a power of two, not {rows}"))
        self.lanes, self.rows, self.acc_width = lanes, rows, acc_width
        wl = write_layout(lanes, rows, acc_width)
        row = data.ArrayLayout(signed(acc_width), lanes)
        addr = wl["addr"].shape
        super().__init__({
            "w": In(stream.Signature(wl, always_ready=True)),
            "l": In(stream.Signature(wl)),
            "r_req": In(stream.Signature(addr, always_ready=True)),
            "r_resp": Out(stream.Signature(row, always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        wl = write_layout(self.lanes, self.rows, self.acc_width)
        row = data.ArrayLayout(signed(self.acc_width), self.lanes)
        mem = memory.Memory(shape=row, depth=self.rows, init=[])
        m.submodules.mem = mem
        wp = mem.write_port()
        rmw = mem.read_port()
        rd = mem.read_port()

        # Stage 0: pick a writer and read the old row.
        req = Signal(wl)
        m.d.comb += [
            self.l.ready.eq(~self.w.valid),
            req.eq(Mux(self.w.valid, self.w.payload, self.l.payload)),
            rmw.addr.eq(req.addr),
            rmw.en.eq(1),
        ]
        # Stage 1: the old row arrives from the block RAM and goes straight into a
        # register (a block RAM's clock-to-output leaves no room for logic behind it).
        s1, s2 = Signal(wl), Signal(wl)
        s1_valid, s2_valid = Signal(), Signal()
        read = Signal(row)
        m.d.sync += [s1.eq(req), s1_valid.eq(self.w.valid | self.l.valid),
                     s2.eq(s1), s2_valid.eq(s1_valid), read.eq(rmw.data)]
        # Stage 2: add (or not) and write. The row was read two cycles ago; the writes of
        # the two cycles since (held in `w1`, the newer, and `w2`) may have changed it.
        # Whether they did is compared a stage earlier, against the operations that
        # become `w1` and `w2` (`hit1`, `hit2`), so only a selection precedes the add.
        w1, w2 = Signal(wl), Signal(wl)
        w1_valid, w2_valid = Signal(), Signal()
        hit1, hit2 = Signal(), Signal()
        m.d.sync += [hit1.eq(s2_valid & (s2.addr == s1.addr)),
                     hit2.eq(w1_valid & (w1.addr == s1.addr))]
        old, total = Signal(row), Signal(row)
        m.d.comb += old.eq(Mux(hit1, w1.data, Mux(hit2, w2.data, read)))
        for i in range(self.lanes):
            m.d.comb += total[i].eq(Mux(s2.accumulate, old[i] + s2.data[i], s2.data[i]))
        m.d.comb += [wp.addr.eq(s2.addr), wp.data.eq(total), wp.en.eq(s2_valid)]
        m.d.sync += [w1.addr.eq(s2.addr), w1.data.eq(total), w1_valid.eq(s2_valid),
                     w2.eq(w1), w2_valid.eq(w1_valid)]

        # The read port: the block RAM's output goes straight into a register.
        resp_pending = Signal()
        m.d.comb += [rd.addr.eq(self.r_req.payload), rd.en.eq(1)]
        m.d.sync += [resp_pending.eq(self.r_req.valid), self.r_resp.valid.eq(resp_pending),
                     self.r_resp.payload.eq(rd.data)]
        return m
