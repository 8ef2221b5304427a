"""Load unit: 2D copies from DRAM into the scratchpad, the accumulator or the parameters.

Runs LOAD instructions. Each DRAM row of ``row_bytes`` bytes arrives from the DMA as
``ceil(row_bytes / bus_bytes)`` beats and becomes one on-chip row, zero-padded: a
scratchpad row (``max(rows, cols)`` int8), an accumulator row (``cols`` little-endian
int32) or a parameter row (``9 * cols`` bytes, see :mod:`llmchip.rtl.store`).

LOADs are pipelined: the unit sends the DMA the next LOAD's command while earlier LOADs'
data is still arriving, up to ``max_loads`` LOADs in flight. A queue of their
descriptors, in program order, has two heads: incoming beats are assembled into rows for
the oldest LOAD whose data is incomplete (a beat with ``last`` ends it), and each
``rd_done`` completes the oldest LOAD not yet completed, which then pushes its token.
The DMA answers commands in order, so both heads only move forward.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from llmchip.config import AcceleratorConfig, check_int
from llmchip.sw import isa, regs

from .accumulator import write_layout
from .dma_if import DmaError, dma_cmd_layout, dma_data_layout, dma_done_layout, error_code
from .pe import _rejected
from .slice import RegisterSlice
from .store import param_row_bytes

__all__ = ["LoadUnit"]


def _addr(rows: int):
    return unsigned(max(1, (rows - 1).bit_length()))


class LoadUnit(wiring.Component):
    """Load unit for ``config`` with the given memory sizes and DMA beat width.

    A LOAD is taken (and its ``pop_next`` token consumed) once the unit has room for it;
    its DMA command goes out from a one-entry register in the next cycle or later. A
    LOAD completes when the DMA reports its command done, in program order; only then are
    all of its rows written and its ``push_next`` token pushed.

    Errors: a LOAD with bad operands (or another opcode) is taken only once every earlier
    LOAD has completed; it issues nothing and reports ``BAD_OPERAND`` (or
    ``ILLEGAL_OPCODE``). A DMA error is reported when its LOAD completes. Either way
    ``error_valid`` rises, only the first error is kept, and the unit takes no further
    instruction; LOADs already sent to the DMA still complete (rows written, tokens
    pushed), so the DMA and the read arbiter drain. ``busy`` is high while any LOAD is in
    flight.

    Parameters
    ----------
    config : AcceleratorConfig
    sp_rows, acc_rows, param_rows : int
        Rows of the scratchpad, the accumulator and the parameter memory.
    bus_bytes : int
        Bytes per DMA data beat.
    addr_width : int
        DRAM address width.
    max_loads : int
        Most LOADs in flight (taken and not completed), a power of two from 2 to 64.
    prechecked : bool
        ``insn`` carries :meth:`operand_ok` of the instruction in the bit above
        ``isa.INSN_BITS`` (computed where it was queued); otherwise the unit computes it.

    Raises
    ------
    TypeError, ValueError
        If ``max_loads`` is not such a power of two.
    """

    def __init__(self, config: AcceleratorConfig, sp_rows: int, acc_rows: int,
                 param_rows: int, bus_bytes: int, addr_width: int = 32, max_loads: int = 8,
                 prechecked: bool = False):
        try:
            check_int("max_loads", max_loads, 2, 64)
        except (TypeError, ValueError) as exc:
            raise _rejected(self, exc) from None
        if max_loads & (max_loads - 1):
            raise _rejected(self, ValueError(
                f"max_loads must be a power of two, not {max_loads!r}"))
        self.config, self.bus_bytes, self.addr_width = config, bus_bytes, addr_width
        self.sp_rows, self.acc_rows, self.param_rows = sp_rows, acc_rows, param_rows
        self.max_loads = max_loads
        self.prechecked = prechecked
        C = config.cols
        self.sp_row_bytes = max(config.rows, config.cols)
        # Widest on-chip row in bytes, per destination.
        self.widths = {isa.Mem.SCRATCHPAD: self.sp_row_bytes,
                       isa.Mem.ACCUMULATOR: C * config.acc_width // 8,
                       isa.Mem.PARAMS: param_row_bytes(C)}
        super().__init__({
            "insn": In(stream.Signature(unsigned(isa.INSN_BITS + prechecked))),
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

    def operand_ok(self, word) -> Value:
        """Whether LOAD ``word``'s operands are good: rows and row bytes not zero, the row
        no wider than its destination's and the last row inside it (one bit)."""
        first, second = self.operand_stages()
        return second(first(word))

    def operand_stages(self) -> tuple:
        """:meth:`operand_ok` as two stages, for a queue's side-bit pipeline (see
        :class:`~llmchip.rtl.cmdproc.CommandProcessor`): the last row's address and the
        checks per destination without it; then its comparison with the destination's
        rows. Each stage holds one carry chain."""
        rows_of = [{isa.Mem.SCRATCHPAD: self.sp_rows, isa.Mem.ACCUMULATOR: self.acc_rows,
                    isa.Mem.PARAMS: self.param_rows}[mem] for mem in self.widths]
        n = len(rows_of)

        def first(word):
            ld = data.View(isa.layout(isa.Opcode.LOAD), word[:isa.INSN_BITS])
            last_row = (ld.sram_addr + ld.rows - 1)[:32]
            return Cat(*((ld.mem == mem) & (ld.rows != 0) & (ld.row_bytes != 0)
                         & (ld.row_bytes <= width) for mem, width in self.widths.items()),
                       last_row)

        def second(value):
            last_row = value[n:]
            return Cat(*(value[i] & (last_row < rows) for i, rows in enumerate(rows_of))).any()

        return first, second

    def elaborate(self, platform):
        m = Module()
        cfg, B = self.config, self.bus_bytes
        C = cfg.cols
        W = max(self.widths.values())
        nbeats_max = -(-W // B)
        D = self.max_loads
        k = (D - 1).bit_length()       # index bits; the pointers have one more (wrap) bit
        k_beats = max(1, (nbeats_max - 1).bit_length())

        word = self.insn.payload[:isa.INSN_BITS]
        ld = data.View(isa.layout(isa.Opcode.LOAD), word)
        is_load = word[:4] == isa.Opcode.LOAD
        need_ex = word[isa.flag_bit("pop_next")]
        push_ex = word[isa.flag_bit("push_next")]
        ok = Signal()
        m.d.comb += ok.eq(self.insn.payload[isa.INSN_BITS] if self.prechecked
                          else self.operand_ok(word))

        # In-flight LOADs, in program order: entries [done_ptr, wr_ptr) are taken and not
        # completed, and [data_ptr, wr_ptr) still expect data.
        # `last_beat` is one-hot: bit j set for a row of j + 1 beats.
        desc_layout = data.StructLayout({"mem": 2, "sram_addr": 16, "push": 1,
                                         "last_beat": nbeats_max})
        descs = Array(Signal(desc_layout, name=f"desc{i}") for i in range(D))
        wr_ptr, data_ptr, done_ptr = (Signal(k + 1, name=n)
                                      for n in ("wr_ptr", "data_ptr", "done_ptr"))
        empty, full = Signal(), Signal()
        m.d.comb += [empty.eq(wr_ptr == done_ptr),
                     full.eq((wr_ptr[:k] == done_ptr[:k]) & (wr_ptr[k] != done_ptr[k]))]

        error_valid = Signal()
        cmd_pending = Signal()
        good, take = Signal(), Signal()
        m.d.comb += [
            good.eq(is_load & ok),
            # A bad instruction waits for the LOADs before it, so errors come in order.
            take.eq(self.insn.valid & ~error_valid & ~cmd_pending
                    & (~need_ex | self.ex_avail) & Mux(good, ~full, empty)),
            self.insn.ready.eq(take),
            self.ex_pop.eq(take & need_ex),
            self.error_valid.eq(error_valid),
        ]

        cmd = Signal(dma_cmd_layout(self.addr_width))
        entry = Signal(desc_layout)
        m.d.comb += [entry.mem.eq(ld.mem), entry.sram_addr.eq(ld.sram_addr),
                     entry.push.eq(push_ex),
                     entry.last_beat.eq(
                         1 << ((ld.row_bytes - 1) >> (B.bit_length() - 1))[:k_beats])]
        with m.If(take & good):
            m.d.sync += [wr_ptr.eq(wr_ptr + 1), cmd_pending.eq(1),
                         cmd.addr.eq(ld.dram_addr), cmd.rows.eq(ld.rows),
                         cmd.row_bytes.eq(ld.row_bytes), cmd.stride.eq(ld.dram_stride)]
            for i, desc in enumerate(descs):
                with m.If(wr_ptr[:k] == i):
                    m.d.sync += desc.eq(entry)
        with m.If(take & ~good):
            m.d.sync += [error_valid.eq(1),
                         self.error.eq(Mux(is_load, regs.ErrorCode.BAD_OPERAND,
                                           regs.ErrorCode.ILLEGAL_OPCODE))]
        m.d.comb += [self.rd_cmd.valid.eq(cmd_pending), self.rd_cmd.payload.eq(cmd)]
        with m.If(self.rd_cmd.valid & self.rd_cmd.ready):
            m.d.sync += cmd_pending.eq(0)

        # Beats enter through a register slice of the unit's own: the DMA side's `ready`
        # is its skid register, so the row state that decides whether a beat is taken
        # stays inside the unit (before, it reached the slice by the read arbiter and came
        # back). A completion waits while the slice holds a command's last beat.
        m.submodules.in_slice = in_slice = RegisterSlice(self.rd_data.payload.shape(),
                                                         last="last")
        wiring.connect(m, wiring.flipped(self.rd_data), in_slice.i)
        beat = in_slice.o

        # Assemble rows of the data head: earlier beats of the row are held in `buf`; the
        # final beat is combined on the fly and the row written out. The data head's
        # descriptor is a register, loaded with the entry at `data_ptr` or the one after
        # it, so no selection among the descriptors precedes the beat's decisions. After
        # a completion without data moves `data_ptr` further, or while a LOAD taken in the
        # same cycle wrote the entry it loaded, the register is stale for a cycle
        # (`head_ok` low: no beat is taken).
        head = Signal(desc_layout)
        head_ok = Signal(init=1)
        mem = Signal(2)
        row_off = Signal(16)                        # rows of the data head written so far
        addr = Signal(16)
        m.d.comb += [mem.eq(head.mem), addr.eq(head.sram_addr + row_off)]
        buf = Signal(data.ArrayLayout(unsigned(8), W))
        row = Signal(data.ArrayLayout(unsigned(8), W))
        row_end = Signal()
        # The beat index, one-hot and kept with a mask of the beats before it: `at[j]` is
        # `beat == j`, `past[j]` is `beat > j`. Byte p of the row is then a choice between
        # this beat's byte, the held byte and zero by two registers, and the row's last
        # beat is an AND with the descriptor's one-hot `last_beat`.
        at = Signal(nbeats_max, init=1)
        past = Signal(nbeats_max)
        m.d.comb += row_end.eq((at & head.last_beat).any())
        for p in range(W):
            j = p // B
            m.d.comb += row[p].eq(Mux(at[j], beat.payload.data[p - j * B],
                                      Mux(past[j], buf[p], 0)))
        writing = Signal()
        m.d.comb += writing.eq(beat.valid & head_ok & row_end)
        # Rows go out a cycle later, from registers: the accumulator's through a register
        # slice, the others (never refused) through plain registers. Only the accumulator
        # can refuse a row (the array's results have priority there).
        m.submodules.acc_slice = acc_slice = RegisterSlice(self.acc_l.payload.shape())
        wiring.connect(m, acc_slice.o, wiring.flipped(self.acc_l))
        # An accumulator row's beats are taken only while the slice can take a row, not
        # only its last one: `ready` then comes from registers alone (the row state that
        # finds the row's end does not reach the input slice), and a refused row waits
        # at most the beats of one row longer.
        m.d.comb += beat.ready.eq(head_ok & ((mem != isa.Mem.ACCUMULATOR)
                                             | acc_slice.i.ready))
        beat_fire = Signal()
        m.d.comb += beat_fire.eq(beat.valid & beat.ready)
        # `buf` follows `row` in every cycle: the bytes of beats already taken (`past`)
        # keep their value, and the others are not read before a taken beat sets them.
        # So no enable reaches its bits.
        m.d.sync += buf.eq(row)
        with m.If(beat_fire):
            with m.If(row_end):
                m.d.sync += [at.eq(1), past.eq(0), row_off.eq(row_off + 1)]
            with m.Else():
                m.d.sync += [at.eq(at << 1), past.eq(past | at)]
            # The DMA marks the final beat of each command.
            with m.If(beat.payload.last):
                m.d.sync += [data_ptr.eq(data_ptr + 1), row_off.eq(0)]

        # The head loads from the descriptors alone; when a LOAD taken this cycle writes
        # the entry it loads (a LOAD whose data cannot come yet), it is stale for a cycle
        # and loads again. So the take decision reaches one bit, not the descriptor.
        written = Signal(2)               # a LOAD taken now writes entry data_ptr, + 1
        m.d.comb += written.eq(Mux(take & good, Cat(wr_ptr[:k] == data_ptr[:k],
                                                    wr_ptr[:k] == (data_ptr + 1)[:k]), 0))
        with m.If(head_ok & beat_fire & beat.payload.last):
            m.d.sync += [head.eq(descs[(data_ptr + 1)[:k]]), head_ok.eq(~written[1])]
        with m.Else():
            m.d.sync += [head.eq(descs[data_ptr[:k]]), head_ok.eq(~written[0])]

        sp_bytes = self.sp_row_bytes
        acc_bytes = self.widths[isa.Mem.ACCUMULATOR]
        raw = row.as_value()
        m.d.sync += [
            self.sp_w.valid.eq(writing & (mem == isa.Mem.SCRATCHPAD)),
            self.sp_w.payload.addr.eq(addr),
            self.sp_w.payload.data.as_value().eq(raw[:8 * sp_bytes]),
            self.param_w.valid.eq(writing & (mem == isa.Mem.PARAMS)),
            self.param_w.payload.addr.eq(addr),
            self.param_w.payload.data.as_value().eq(raw[:8 * param_row_bytes(C)]),
        ]
        acc_in = acc_slice.i.payload
        m.d.comb += [
            acc_slice.i.valid.eq(writing & (mem == isa.Mem.ACCUMULATOR)),
            acc_in.addr.eq(addr),
            acc_in.accumulate.eq(0),
        ]
        lane_bits = cfg.acc_width
        for j in range(C):
            m.d.comb += acc_in.data[j].eq(
                raw[lane_bits * j:lane_bits * (j + 1)].as_signed()
                if lane_bits * (j + 1) <= 8 * acc_bytes else Signal(signed(lane_bits)))
        # A command's last beat may still wait in the input slice, and a row on its way
        # to the accumulator in the accumulator's slice; a scratchpad or parameter row
        # lands at the end of the cycle after its last beat is taken, before the
        # completion, which comes a cycle or more after that, is taken.
        writes_pending = Signal()
        m.d.comb += writes_pending.eq(acc_slice.holding | in_slice.holding_last)

        # Completion of the oldest LOAD in flight: the DMA sends `rd_done` only after the
        # command's last beat was taken, and it is taken once no row waits for the
        # accumulator, so its rows are written (or, for the scratchpad and the parameter
        # memory, are written at this clock edge).
        done = Signal()
        m.d.comb += [self.rd_done.ready.eq(~empty & ~writes_pending),
                     done.eq(self.rd_done.valid & self.rd_done.ready)]
        with m.If(done):
            m.d.comb += self.ex_push.eq(descs[done_ptr[:k]].push)
            m.d.sync += done_ptr.eq(done_ptr + 1)
            # A command that ended without its data (an abort) must not shift the rows of
            # the next LOAD.
            with m.If(data_ptr == done_ptr):
                m.d.sync += [data_ptr.eq(done_ptr + 1), head_ok.eq(0), at.eq(1), past.eq(0),
                             row_off.eq(0)]
            with m.If((self.rd_done.payload.error != DmaError.OK) & ~error_valid):
                m.d.sync += [error_valid.eq(1),
                             self.error.eq(error_code(self.rd_done.payload.error))]
        m.d.comb += self.busy.eq(~empty | take)
        return m
