"""Load unit: 2D copies from DRAM into the scratchpad, the accumulator or the parameters.

Runs LOAD instructions. Each DRAM row of ``row_bytes`` bytes arrives from the DMA as
``ceil(row_bytes / bus_bytes)`` beats and becomes one on-chip row, zero-padded: a
scratchpad row (``max(rows, cols)`` int8), an accumulator row (``cols`` little-endian
int32) or a parameter row (``9 * cols`` bytes, see :mod:`llmchip.rtl.store`). The unit
completes, and pushes its token, once the DMA has reported the transfer done.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from llmchip.config import AcceleratorConfig
from llmchip.sw import isa, regs

from .accumulator import write_layout
from .dma_if import DmaError, dma_cmd_layout, dma_data_layout, dma_done_layout, error_code
from .store import param_row_bytes

__all__ = ["LoadUnit"]


def _addr(rows: int):
    return unsigned(max(1, (rows - 1).bit_length()))


class LoadUnit(wiring.Component):
    """Load unit for ``config`` with the given memory sizes and DMA beat width.

    Parameters
    ----------
    config : AcceleratorConfig
    sp_rows, acc_rows, param_rows : int
        Rows of the scratchpad, the accumulator and the parameter memory.
    bus_bytes : int
        Bytes per DMA data beat.
    addr_width : int
        DRAM address width.
    """

    def __init__(self, config: AcceleratorConfig, sp_rows: int, acc_rows: int,
                 param_rows: int, bus_bytes: int, addr_width: int = 32):
        self.config, self.bus_bytes, self.addr_width = config, bus_bytes, addr_width
        self.sp_rows, self.acc_rows, self.param_rows = sp_rows, acc_rows, param_rows
        C = config.cols
        self.sp_row_bytes = max(config.rows, config.cols)
        # Widest on-chip row in bytes, per destination.
        self.widths = {isa.Mem.SCRATCHPAD: self.sp_row_bytes,
                       isa.Mem.ACCUMULATOR: C * config.acc_width // 8,
                       isa.Mem.PARAMS: param_row_bytes(C)}
        super().__init__({
            "insn": In(stream.Signature(unsigned(isa.INSN_BITS))),
            "rd_cmd": Out(stream.Signature(dma_cmd_layout(addr_width))),
            "rd_data": In(stream.Signature(dma_data_layout(bus_bytes))),
            "rd_done": In(stream.Signature(dma_done_layout())),
            "sp_w": Out(stream.Signature(data.StructLayout({
                "addr": _addr(sp_rows),
                "data": data.ArrayLayout(unsigned(8), self.sp_row_bytes)}), always_ready=True)),
            "acc_l": Out(stream.Signature(write_layout(C, acc_rows, config.acc_width))),
            "param_w": Out(stream.Signature(data.StructLayout({
                "addr": _addr(param_rows),
                "data": data.ArrayLayout(unsigned(8), param_row_bytes(C))}),
                always_ready=True)),
            "ex_avail": In(1), "ex_pop": Out(1), "ex_push": Out(1),
            "busy": Out(1),
            "error": Out(8), "error_valid": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, B = self.config, self.bus_bytes
        C = cfg.cols
        W = max(self.widths.values())
        nbeats_max = -(-W // B)

        word = self.insn.payload
        ld = data.View(isa.layout(isa.Opcode.LOAD), word)
        is_load = word[:4] == isa.Opcode.LOAD
        need_ex = word[isa.flag_bit("pop_next")]
        push_ex = word[isa.flag_bit("push_next")]

        rows_of = {isa.Mem.SCRATCHPAD: self.sp_rows, isa.Mem.ACCUMULATOR: self.acc_rows,
                   isa.Mem.PARAMS: self.param_rows}
        last_row = Signal(32)
        m.d.comb += last_row.eq(ld.sram_addr + ld.rows - 1)
        ok = Signal()
        with m.Switch(ld.mem):
            for mem, width in self.widths.items():
                with m.Case(mem):
                    m.d.comb += ok.eq((ld.rows != 0) & (ld.row_bytes != 0)
                                      & (ld.row_bytes <= width)
                                      & (last_row < rows_of[mem]))
            with m.Default():
                m.d.comb += ok.eq(0)

        error_valid, active = Signal(), Signal()
        take = Signal()
        m.d.comb += [
            take.eq(self.insn.valid & ~active & ~error_valid & (~need_ex | self.ex_avail)),
            self.insn.ready.eq(take),
            self.ex_pop.eq(take & need_ex),
            self.error_valid.eq(error_valid),
        ]

        mem = Signal(2)
        addr = Signal(16)
        push = Signal()
        cmd_pending = Signal()
        cmd = Signal(dma_cmd_layout(self.addr_width))
        nbeats = Signal(range(nbeats_max + 1))      # beats per row
        beat = Signal(range(max(nbeats_max, 2)))
        with m.If(take):
            with m.If(is_load & ok):
                m.d.sync += [active.eq(1), mem.eq(ld.mem), addr.eq(ld.sram_addr),
                             push.eq(push_ex), cmd_pending.eq(1), beat.eq(0),
                             cmd.addr.eq(ld.dram_addr), cmd.rows.eq(ld.rows),
                             cmd.row_bytes.eq(ld.row_bytes), cmd.stride.eq(ld.dram_stride),
                             nbeats.eq((ld.row_bytes + B - 1) >> (B.bit_length() - 1))]
            with m.Else():
                m.d.sync += [error_valid.eq(1),
                             self.error.eq(Mux(is_load, regs.ErrorCode.BAD_OPERAND,
                                               regs.ErrorCode.ILLEGAL_OPCODE))]
        m.d.comb += [self.rd_cmd.valid.eq(cmd_pending), self.rd_cmd.payload.eq(cmd)]
        with m.If(self.rd_cmd.valid & self.rd_cmd.ready):
            m.d.sync += cmd_pending.eq(0)

        # Assemble rows: earlier beats of the row are held in `buf`; the final beat is
        # combined on the fly and the row written out.
        buf = Signal(data.ArrayLayout(unsigned(8), W))
        row = Signal(data.ArrayLayout(unsigned(8), W))
        beats_m1 = Signal.like(beat)
        row_end = Signal()
        m.d.comb += [beats_m1.eq(nbeats - 1), row_end.eq(beat == beats_m1)]
        for k in range(nbeats_max):
            with m.If(beat == k):
                for p in range(W):
                    if k * B <= p < (k + 1) * B:
                        m.d.comb += row[p].eq(self.rd_data.payload.data[p - k * B])
                    elif p < k * B:
                        m.d.comb += row[p].eq(buf[p])
        writing = Signal()
        m.d.comb += writing.eq(self.rd_data.valid & row_end)
        # Only the accumulator can refuse a row (the array's results have priority there).
        m.d.comb += self.rd_data.ready.eq(~row_end | (mem != isa.Mem.ACCUMULATOR)
                                          | self.acc_l.ready)
        beat_fire = Signal()
        m.d.comb += beat_fire.eq(self.rd_data.valid & self.rd_data.ready)
        with m.If(beat_fire):
            m.d.sync += buf.eq(row)
            with m.If(row_end):
                m.d.sync += [beat.eq(0), addr.eq(addr + 1)]
            with m.Else():
                m.d.sync += beat.eq(beat + 1)

        sp_bytes = self.sp_row_bytes
        acc_bytes = self.widths[isa.Mem.ACCUMULATOR]
        raw = row.as_value()
        m.d.comb += [
            self.sp_w.valid.eq(writing & (mem == isa.Mem.SCRATCHPAD)),
            self.sp_w.payload.addr.eq(addr),
            self.sp_w.payload.data.as_value().eq(raw[:8 * sp_bytes]),
            self.acc_l.valid.eq(writing & (mem == isa.Mem.ACCUMULATOR)),
            self.acc_l.payload.addr.eq(addr),
            self.acc_l.payload.accumulate.eq(0),
            self.param_w.valid.eq(writing & (mem == isa.Mem.PARAMS)),
            self.param_w.payload.addr.eq(addr),
            self.param_w.payload.data.as_value().eq(raw[:8 * param_row_bytes(C)]),
        ]
        lane_bits = cfg.acc_width
        for j in range(C):
            m.d.comb += self.acc_l.payload.data[j].eq(
                raw[lane_bits * j:lane_bits * (j + 1)].as_signed()
                if lane_bits * (j + 1) <= 8 * acc_bytes else Signal(signed(lane_bits)))

        # Completion.
        with m.If(active & ~cmd_pending & self.rd_done.valid):
            m.d.comb += [self.rd_done.ready.eq(1), self.ex_push.eq(push)]
            m.d.sync += active.eq(0)
            with m.If(self.rd_done.payload.error != DmaError.OK):
                m.d.sync += [error_valid.eq(1),
                             self.error.eq(error_code(self.rd_done.payload.error))]
        m.d.comb += self.busy.eq(active | take)
        return m
