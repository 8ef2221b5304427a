"""Store unit: accumulator rows through the post-processor to int8 rows in DRAM.

Runs CONFIG (post-processing globals) and STORE instructions. A STORE reads its block's
per-channel parameters (bias, multiplier, shift) from the parameter memory, starts a 2D
DMA write, then streams ``rows`` accumulator rows through the :class:`PostProcessor` and
out as ``cols`` bytes per row. It completes (and pushes its token) when the DMA has seen
every write response.

The parameter memory holds rows of ``9 * cols`` bytes, loaded from DRAM by LOAD with
``mem = PARAMS``: ``cols`` int32 biases, then ``cols`` uint32 multipliers (below 2**31),
then ``cols`` uint8 right shifts, all little-endian.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from llmchip.config import AcceleratorConfig
from llmchip.sw import isa, regs

from .accumulator import Accumulator
from .dma_if import DmaError, dma_cmd_layout, dma_data_layout, dma_done_layout, error_code
from .pe import _rejected
from .postproc import PostProcessor

__all__ = ["StoreUnit", "param_row_bytes"]


def param_row_bytes(cols: int) -> int:
    """Bytes of one parameter row for an array with ``cols`` columns."""
    return 9 * cols


class StoreUnit(wiring.Component):
    """Store unit for ``config`` (see the module docstring).

    Parameters
    ----------
    config : AcceleratorConfig
    acc_rows, param_rows : int
        Rows of the accumulator and of the parameter memory (powers of two).
    bus_bytes : int
        Bytes per DMA data beat.
    addr_width : int
        DRAM address width.
    prechecked : bool
        ``insn`` carries :meth:`operand_ok` of the instruction in the bit above
        ``isa.INSN_BITS`` (computed where it was queued); otherwise the unit computes it.
    """

    #: Accumulator rows buffered ahead of the post-processor: the reads in flight and
    #: the buffered queue's refill, so that reads issue one per cycle.
    FIFO_DEPTH = Accumulator.READ_LATENCY + 3
    #: Rows the output queue holds: every row the post-processor may hold, plus the
    #: cycles a freed entry takes to reach the credit check, so that rows flow one per
    #: cycle while the DMA takes them.
    OUT_DEPTH = PostProcessor.latency + 3

    def __init__(self, config: AcceleratorConfig, acc_rows: int, param_rows: int,
                 bus_bytes: int, addr_width: int = 32, prechecked: bool = False):
        if param_rows < 2 or param_rows & (param_rows - 1):
            raise _rejected(self, ValueError(f"param_rows must be a power of two >= 2, "
                                             f"not {param_rows!r}"))
        self.config, self.acc_rows, self.param_rows = config, acc_rows, param_rows
        self.bus_bytes, self.addr_width = bus_bytes, addr_width
        self.prechecked = prechecked
        C = config.cols
        acc_row = data.ArrayLayout(signed(config.acc_width), C)
        super().__init__({
            "insn": In(stream.Signature(unsigned(isa.INSN_BITS + prechecked))),
            "param_w": In(stream.Signature(data.StructLayout({
                "addr": unsigned(max(1, (param_rows - 1).bit_length())),
                "data": data.ArrayLayout(unsigned(8), param_row_bytes(C))}),
                always_ready=True)),
            "acc_req": Out(stream.Signature(unsigned(max(1, (acc_rows - 1).bit_length())),
                                            always_ready=True)),
            "acc_resp": In(stream.Signature(acc_row, always_ready=True)),
            "wr_cmd": Out(stream.Signature(dma_cmd_layout(addr_width))),
            "wr_data": Out(stream.Signature(dma_data_layout(bus_bytes, last=False))),
            "wr_done": In(stream.Signature(dma_done_layout())),
            "ex_avail": In(1), "ex_pop": Out(1), "ex_push": Out(1),
            "busy": Out(1),
            "error": Out(8), "error_valid": Out(1),
        })

    def operand_ok(self, word) -> Value:
        """Whether STORE ``word``'s operands are good: rows and columns not zero, no more
        columns than the array's, the last row inside the accumulator and the parameter
        row inside the parameter memory (one bit)."""
        first, second = self.operand_stages()
        return second(first(word))

    def operand_stages(self) -> tuple:
        """:meth:`operand_ok` as two stages, for a queue's side-bit pipeline (see
        :class:`~llmchip.rtl.cmdproc.CommandProcessor`): the last row's address and the
        other checks; then its comparison with the accumulator's rows."""
        def first(word):
            st = data.View(isa.layout(isa.Opcode.STORE), word[:isa.INSN_BITS])
            last_row = (st.acc_addr + st.rows - 1)[:32]
            return Cat((st.rows != 0) & (st.cols != 0) & (st.cols <= self.config.cols)
                       & (st.param_addr < self.param_rows), last_row)

        def second(value):
            return value[0] & (value[1:] < self.acc_rows)

        return first, second

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        C, B = cfg.cols, self.bus_bytes
        m.submodules.pp = pp = PostProcessor(C, cfg.acc_width, 8)

        # -- parameter memory -------------------------------------------------------------
        from amaranth.lib import memory
        prow = data.ArrayLayout(unsigned(8), param_row_bytes(C))
        m.submodules.params = pmem = memory.Memory(shape=prow, depth=self.param_rows, init=[])
        pw = pmem.write_port()
        pr = pmem.read_port()
        m.d.comb += [pw.addr.eq(self.param_w.payload.addr), pw.data.eq(self.param_w.payload.data),
                     pw.en.eq(self.param_w.valid)]

        # -- decode --------------------------------------------------------------------------
        word = self.insn.payload[:isa.INSN_BITS]
        op = word[:4]
        st = data.View(isa.layout(isa.Opcode.STORE), word)
        cf = data.View(isa.layout(isa.Opcode.CONFIG), word)
        is_store = op == isa.Opcode.STORE
        is_config = op == isa.Opcode.CONFIG
        need_ex = word[isa.flag_bit("pop_prev")]
        push_ex = word[isa.flag_bit("push_prev")]
        ok = Signal()
        m.d.comb += ok.eq(self.insn.payload[isa.INSN_BITS] if self.prechecked
                          else self.operand_ok(word))

        zero_point, relu = Signal(signed(8)), Signal()
        m.d.comb += [pp.zero_point.eq(zero_point), pp.relu.eq(relu)]

        error_valid = Signal()
        active = Signal()
        take = Signal()
        m.d.comb += [
            take.eq(self.insn.valid & ~active & ~error_valid & (~need_ex | self.ex_avail)),
            self.insn.ready.eq(take),
            self.ex_pop.eq(take & need_ex),
            self.error_valid.eq(error_valid),
        ]

        # Registers of the running STORE.
        rows = Signal(14)
        cols = Signal(range(C + 1))
        acc_addr = Signal(16)
        push = Signal()
        reads_left = Signal(14)
        beats_left = Signal(32)
        cmd_pending = Signal()
        params_pending = Signal()
        cmd = Signal(dma_cmd_layout(self.addr_width))
        # Every row read and every beat sent, as of the previous cycle: a register, so the
        # completion logic does not start from the counters' compares. In STREAM it only
        # ever goes from low to high (the command is taken once, as `beats_left` is set),
        # and it is low on entering STREAM, the command being still pending then.
        sent = Signal()
        m.d.sync += sent.eq((beats_left == 0) & ~cmd_pending & (reads_left == 0))

        with m.FSM():
            with m.State("IDLE"):
                with m.If(take):
                    with m.If(is_config):
                        m.d.sync += [zero_point.eq(cf.zero_point), relu.eq(cf.relu)]
                        m.d.comb += self.ex_push.eq(push_ex)
                    with m.Elif(is_store & ok):
                        m.d.sync += [
                            active.eq(1), rows.eq(st.rows), cols.eq(st.cols),
                            acc_addr.eq(st.acc_addr), push.eq(push_ex),
                            reads_left.eq(st.rows), cmd_pending.eq(1), params_pending.eq(1),
                            cmd.addr.eq(st.dram_addr), cmd.rows.eq(st.rows),
                            cmd.row_bytes.eq(st.cols), cmd.stride.eq(st.dram_stride),
                        ]
                        m.next = "PARAMS"
                    with m.Else():
                        m.d.sync += [error_valid.eq(1),
                                     self.error.eq(Mux(is_store, regs.ErrorCode.BAD_OPERAND,
                                                       regs.ErrorCode.ILLEGAL_OPCODE))]
            with m.State("PARAMS"):
                # The parameter row was addressed on the take edge; it is on pr.data now.
                m.next = "STREAM"
            with m.State("STREAM"):
                with m.If(sent & self.wr_done.valid):
                    m.d.comb += self.wr_done.ready.eq(1)
                    m.d.sync += active.eq(0)
                    m.d.comb += self.ex_push.eq(push)
                    with m.If(self.wr_done.payload.error != DmaError.OK):
                        m.d.sync += [error_valid.eq(1),
                                     self.error.eq(error_code(self.wr_done.payload.error))]
                    m.next = "IDLE"
        m.d.comb += [pr.addr.eq(st.param_addr), pr.en.eq(take)]

        # Hold the block's parameters for the post-processor.
        bias = Signal(data.ArrayLayout(signed(32), C))
        mult = Signal(data.ArrayLayout(unsigned(31), C))
        shift = Signal(data.ArrayLayout(unsigned(6), C))
        # The shift bytes are held as read and clamped to 63 behind the register: the
        # parameter memory's block RAM output goes straight into registers.
        shift_raw = Signal(data.ArrayLayout(unsigned(8), C))
        raw = pr.data.as_value()
        with m.If(params_pending & active):
            m.d.sync += params_pending.eq(0)
            for j in range(C):
                m.d.sync += [
                    bias[j].eq(raw[32 * j:32 * j + 32]),
                    mult[j].eq(raw[32 * C + 32 * j:32 * C + 32 * j + 31]),
                    shift_raw[j].eq(raw[64 * C + 8 * j:64 * C + 8 * j + 8]),
                ]
        for j in range(C):
            m.d.comb += shift[j].eq(Mux(shift_raw[j] > 63, 63, shift_raw[j][:6]))
        m.d.comb += [pp.bias.eq(bias), pp.mult.eq(mult), pp.shift.eq(shift)]

        # DMA command.
        m.d.comb += [self.wr_cmd.valid.eq(cmd_pending), self.wr_cmd.payload.eq(cmd)]
        beats_per_row = Signal(range(-(-C // B) + 1))
        m.d.comb += beats_per_row.eq((cols + B - 1) >> (B.bit_length() - 1) if C > B else 1)
        with m.If(self.wr_cmd.valid & self.wr_cmd.ready):
            m.d.sync += [cmd_pending.eq(0), beats_left.eq(rows * beats_per_row)]

        # Accumulator reads into a FIFO (responses cannot wait), then the post-processor.
        m.submodules.rows_fifo = rf = fifo.SyncFIFOBuffered(width=C * cfg.acc_width + 1,
                                                            depth=self.FIFO_DEPTH)
        # Reads in flight: one bit per cycle of the accumulator's read latency.
        lat = Accumulator.READ_LATENCY
        inflight = Signal(lat)
        used = Signal.like(rf.level)
        m.d.comb += used.eq(rf.level + sum(inflight[i] for i in range(lat)))
        issue = Signal()
        m.d.comb += [
            issue.eq(active & ~params_pending & (reads_left != 0) & (used < self.FIFO_DEPTH)),
            self.acc_req.valid.eq(issue),
            self.acc_req.payload.eq(acc_addr),
        ]
        is_last = Signal(lat)                # the command's last read, beside `inflight`
        m.d.sync += [inflight.eq(Cat(issue, inflight[:-1])),
                     is_last.eq(Cat(issue & (reads_left == 1), is_last[:-1]))]
        with m.If(issue):
            m.d.sync += [acc_addr.eq(acc_addr + 1), reads_left.eq(reads_left - 1)]
        # The post-processor never stalls: a row enters it only when the output queue has
        # room for it and for every row ahead of it (`held` counts both), so the DMA's
        # `ready` reaches no further than the queue's read port.
        m.submodules.out_fifo = of = fifo.SyncFIFOBuffered(width=C * 8, depth=self.OUT_DEPTH)
        held = Signal(range(self.OUT_DEPTH + 1))
        enter = Signal()
        m.d.comb += [
            rf.w_en.eq(self.acc_resp.valid),
            rf.w_data.eq(Cat(self.acc_resp.payload.as_value(), is_last[-1])),
            enter.eq(rf.r_rdy & (held < self.OUT_DEPTH)),
            pp.i.valid.eq(enter),
            pp.i.payload.data.as_value().eq(rf.r_data[:C * cfg.acc_width]),
            pp.i.payload.last.eq(rf.r_data[-1]),
            rf.r_en.eq(enter),
            pp.o.ready.eq(1),
            of.w_en.eq(pp.o.valid),
            of.w_data.eq(pp.o.payload.data.as_value()),
        ]
        m.d.sync += held.eq(held + enter - (of.r_en & of.r_rdy))

        # Split each int8 row into bus beats.
        nbeats = -(-C // B)
        beat = Signal(range(max(nbeats, 2)))
        row_bytes = of.r_data
        for k in range(nbeats):
            with m.If(beat == k):
                for i in range(B):
                    src = k * B + i
                    m.d.comb += self.wr_data.payload.data[i].eq(
                        row_bytes[8 * src:8 * src + 8] if src < C else 0)
        row_done = Signal()
        beats_m1 = Signal.like(beat)
        m.d.comb += [
            beats_m1.eq(beats_per_row - 1),
            row_done.eq(beat == beats_m1),
            self.wr_data.valid.eq(of.r_rdy & (beats_left != 0)),
            of.r_en.eq(self.wr_data.ready & row_done & (beats_left != 0)),
        ]
        with m.If(self.wr_data.valid & self.wr_data.ready):
            m.d.sync += [beat.eq(Mux(row_done, 0, beat + 1)), beats_left.eq(beats_left - 1)]

        m.d.comb += self.busy.eq(active | take)
        return m
