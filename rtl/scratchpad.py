"""Scratchpad: banked int8 SRAM with one write port and two prioritized read ports.

Rows are ``row_bytes`` int8 lanes wide. The address space is split into ``banks``
contiguous banks (bank ``b`` holds rows ``b * bank_rows`` to ``(b + 1) * bank_rows - 1``),
each its own simple-dual-port memory, so a DMA write into one bank never blocks reads of
another: with two banks, software double-buffers by loading one half while the array
reads the other. Two read clients share the banks: port ``a`` (activations) wins a bank
conflict, port ``b`` (weights) waits. A read accepted in cycle ``t`` returns its row in
cycle ``t + READ_LATENCY`` (2: the block RAM's output goes straight into a register, as
its clock-to-output leaves no room for logic behind it); responses cannot be stalled, so a
client only asks when it can take the answer.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .pe import _check_min, _rejected

__all__ = ["Scratchpad"]


class Scratchpad(wiring.Component):
    """Banked scratchpad of ``rows`` rows of ``row_bytes`` bytes.

    Parameters
    ----------
    row_bytes : int
        Bytes (int8 lanes) per row, >= 1.
    rows : int
        Total rows, a multiple of ``banks`` and a power of two, >= 2.
    banks : int
        Number of banks, a power of two, 1 to ``rows``.

    Raises
    ------
    ValueError
        If a parameter is out of range, naming it.

    Notes
    -----
    Ports: ``w`` (stream of ``{addr, data}``, always ready: every bank has its own write
    port), ``a_req``/``b_req`` (streams of row addresses), ``a_resp``/``b_resp`` (row
    data, valid ``READ_LATENCY`` cycles after the request was accepted; no ready).
    """

    #: Cycles from a read's acceptance to its response.
    READ_LATENCY = 2

    def __init__(self, row_bytes: int, rows: int, banks: int = 2):
        for name, value, lo in (("row_bytes", row_bytes, 1), ("rows", rows, 2),
                                ("banks", banks, 1)):
            _check_min(self, name, value, lo)
        if rows & (rows - 1) or banks & (banks - 1) or banks > rows:
            raise _rejected(self, ValueError(
                f"rows and banks must be powers of two with banks <= rows, not "
                f"rows={rows}, banks={banks}"))
        self.row_bytes, self.rows, self.banks = row_bytes, rows, banks
        self.bank_rows = rows // banks
        row = data.ArrayLayout(unsigned(8), row_bytes)
        addr = unsigned(max(1, (rows - 1).bit_length()))
        super().__init__({
            "w": In(stream.Signature(data.StructLayout({"addr": addr, "data": row}),
                                     always_ready=True)),
            "a_req": In(stream.Signature(addr)),
            "b_req": In(stream.Signature(addr)),
            "a_resp": Out(stream.Signature(row, always_ready=True)),
            "b_resp": Out(stream.Signature(row, always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        bank_bits = (self.banks - 1).bit_length()
        index_bits = max(1, (self.bank_rows - 1).bit_length())
        row = data.ArrayLayout(unsigned(8), self.row_bytes)

        def split(addr):
            index = addr[:index_bits] if self.bank_rows > 1 else 0
            bank = addr[index_bits:index_bits + bank_bits] if bank_bits else 0
            return bank, index

        a_bank, a_index = split(self.a_req.payload)
        b_bank, b_index = split(self.b_req.payload)
        w_bank, w_index = split(self.w.payload.addr)
        conflict = Signal()
        m.d.comb += [
            conflict.eq(self.a_req.valid & (a_bank == b_bank)),
            self.a_req.ready.eq(1),
            self.b_req.ready.eq(~conflict),
        ]
        # The bank each response comes from, and the valid bits, delayed to the response.
        a_sel = Signal(range(self.banks) if self.banks > 1 else 1)
        b_sel = Signal.like(a_sel)
        a_sel1, b_sel1 = Signal.like(a_sel), Signal.like(a_sel)
        a_valid1, b_valid1 = Signal(), Signal()
        m.d.sync += [
            a_valid1.eq(self.a_req.valid), b_valid1.eq(self.b_req.valid & ~conflict),
            self.a_resp.valid.eq(a_valid1), self.b_resp.valid.eq(b_valid1),
            a_sel1.eq(a_bank), b_sel1.eq(b_bank), a_sel.eq(a_sel1), b_sel.eq(b_sel1),
        ]
        for b in range(self.banks):
            mem = memory.Memory(shape=row, depth=self.bank_rows, init=[])
            m.submodules[f"bank{b}"] = mem
            # One write and one read port per bank: a simple-dual-port block RAM.
            wp = mem.write_port()
            rp = mem.read_port()
            a_here = self.a_req.valid & (a_bank == b)
            b_here = self.b_req.valid & (b_bank == b)
            m.d.comb += [
                wp.addr.eq(w_index), wp.data.eq(self.w.payload.data),
                wp.en.eq(self.w.valid & (w_bank == b)),
                rp.addr.eq(Mux(a_here, a_index, b_index)),
                rp.en.eq(a_here | b_here),
            ]
            q = Signal(row, name=f"bank{b}_q")
            m.d.sync += q.eq(rp.data)
            with m.If(a_sel == b):
                m.d.comb += self.a_resp.payload.eq(q)
            with m.If(b_sel == b):
                m.d.comb += self.b_resp.payload.eq(q)
        return m
