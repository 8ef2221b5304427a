"""Accumulator: int32 SRAM rows with accumulate-on-write, for splitting K across tiles.

A write either overwrites a row or adds to it lane by lane (two's-complement wraparound
at ``acc_width`` bits). The add is a read-modify-write pipelined over two cycles; the
read port is transparent to the write port, so back-to-back writes to the same row (a
batch-1 GEMV accumulating over K on a 1-row array) see each other. Two writers share the
pipeline: ``w`` (the array's results, which cannot wait) has priority over ``l`` (rows
loaded from DRAM). A separate read port ``r_req``/``r_resp`` serves the store unit with
one cycle of latency.
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
    A write accepted in cycle ``t`` is visible to reads accepted in cycle ``t + 2`` and
    later (and to accumulating writes from cycle ``t + 1`` on).
    """

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
        rmw = mem.read_port(transparent_for=(wp,))
        rd = mem.read_port()

        # Stage 0: pick a writer and read the old row.
        req = Signal(wl)
        m.d.comb += [
            self.l.ready.eq(~self.w.valid),
            req.eq(Mux(self.w.valid, self.w.payload, self.l.payload)),
            rmw.addr.eq(req.addr),
            rmw.en.eq(1),
        ]
        # Stage 1: add (or not) and write.
        s1 = Signal(wl)
        s1_valid = Signal()
        m.d.sync += [s1.eq(req), s1_valid.eq(self.w.valid | self.l.valid)]
        total = Signal(row)
        for i in range(self.lanes):
            m.d.comb += total[i].eq(Mux(s1.accumulate, rmw.data[i] + s1.data[i], s1.data[i]))
        m.d.comb += [wp.addr.eq(s1.addr), wp.data.eq(total), wp.en.eq(s1_valid)]

        m.d.comb += [rd.addr.eq(self.r_req.payload), rd.en.eq(1)]
        m.d.sync += self.r_resp.valid.eq(self.r_req.valid)
        m.d.comb += self.r_resp.payload.eq(rd.data)
        return m
