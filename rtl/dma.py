"""AXI4 DMA engine: 2D strided transfers between DRAM and the accelerator's streams.

Two independent engines share one AXI4 manager port: a read engine (DRAM -> ``rd_data``)
and a write engine (``wr_data`` -> DRAM). Each takes 2D commands (``rows`` rows of
``row_bytes`` bytes, row ``r`` at byte address ``addr + r * stride``, any byte alignment),
splits every row into INCR bursts that never cross a 4 KB boundary nor exceed
``max_burst`` beats, keeps up to ``max_outstanding`` bursts in flight, realigns the data so
row byte 0 is always lane 0 of the stream, and reports one completion per command.

Each engine is a pipeline of three parts joined by queues, all in command order:

* a *command check* that classifies a command (bus transfer, out of window, malformed);
* a *burst issuer* that walks rows and bursts, drives ``AR``/``AW`` and pushes one row
  descriptor per row;
* a *data path* that consumes row descriptors: for reads it realigns ``R`` beats (held in
  a buffer whose space is reserved before a burst is issued, so ``rready`` never stalls)
  into ``rd_data``; for writes it realigns ``wr_data`` into ``W`` beats with strobes. Write
  completions wait for the ``B`` responses.

See ``docs/dma.md`` for the port list, timing and error behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from llmchip.config import check_int

from .axi import AXI4_DATA_WIDTHS, AxiBurst, axi4_signature
from .dsp import is_ecp5, registered_product
from .pe import _rejected

__all__ = ["DmaError", "DmaConfig", "AxiDma", "command_layout", "read_data_layout",
           "write_data_layout", "DONE_LAYOUT"]

#: Bytes in the page that no INCR burst may cross.
PAGE_BYTES = 4096


class DmaError(enum.IntEnum, shape=3):
    """Completion codes reported on ``rd_done``/``wr_done``.

    ``OK``
        Every byte was transferred.
    ``SLVERR``
        A bus response was SLVERR (the first error response of the command decides).
    ``DECERR``
        A bus response was DECERR (ditto).
    ``OUT_OF_WINDOW``
        Some byte of the command lies outside ``[window_base, window_base + window_size)``
        (or past the end of the address space); the command made no bus access.
    ``BAD_COMMAND``
        ``rows == 0`` or ``row_bytes == 0``; nothing was transferred.
    ``ABORTED``
        ``abort`` ended the command before it completed.
    """

    OK = 0
    SLVERR = 1
    DECERR = 2
    OUT_OF_WINDOW = 3
    BAD_COMMAND = 4
    ABORTED = 5


def command_layout(addr_width: int) -> data.StructLayout:
    """Return the payload layout of ``rd_cmd``/``wr_cmd``."""
    return data.StructLayout({"addr": addr_width, "rows": 16, "row_bytes": 16,
                              "stride": addr_width})


def read_data_layout(data_width: int) -> data.StructLayout:
    """Return the payload layout of ``rd_data``."""
    return data.StructLayout({"data": data.ArrayLayout(unsigned(8), data_width // 8),
                              "last": 1})


def write_data_layout(data_width: int) -> data.StructLayout:
    """Return the payload layout of ``wr_data``."""
    return data.StructLayout({"data": data.ArrayLayout(unsigned(8), data_width // 8)})


#: Payload layout of ``rd_done``/``wr_done`` (``error`` is a :class:`DmaError` value).
DONE_LAYOUT = data.StructLayout({"error": 3})


@dataclass(frozen=True)
class DmaConfig:
    """Parameters of an :class:`AxiDma`, their derived sizes and their validation.

    Parameters
    ----------
    addr_width : int
        AXI byte address width, 12 to 64.
    data_width : int
        AXI data width, one of 32, 64, 128, 256, 512.
    id_width : int
        AXI ID width, 1 to 32 (the DMA always uses ID 0, so responses come in order).
    max_burst : int
        Most beats per burst: a power of two from 1 to 256, with
        ``max_burst * data_width / 8 <= 4096``.
    max_outstanding : int
        Most bursts in flight per direction, 1 to 64.

    Raises
    ------
    TypeError
        If a parameter is not an int.
    ValueError
        If a parameter is out of range; the message names it and its value.
    """

    addr_width: int = 32
    data_width: int = 128
    id_width: int = 1
    max_burst: int = 16
    max_outstanding: int = 4

    def __post_init__(self) -> None:
        check_int("addr_width", self.addr_width, 12, 64)
        if isinstance(self.data_width, bool) or not isinstance(self.data_width, int):
            raise TypeError(f"data_width must be an int, not {type(self.data_width).__name__} "
                            f"{self.data_width!r}")
        if self.data_width not in AXI4_DATA_WIDTHS:
            raise ValueError(f"data_width must be one of "
                             f"{', '.join(map(str, AXI4_DATA_WIDTHS))}, not {self.data_width!r}")
        check_int("id_width", self.id_width, 1, 32)
        check_int("max_burst", self.max_burst, 1, 256)
        if self.max_burst & (self.max_burst - 1):
            raise ValueError(f"max_burst must be a power of two, not {self.max_burst!r}")
        if self.max_burst * self.beat_bytes > PAGE_BYTES:
            raise ValueError(f"max_burst must be at most {PAGE_BYTES // self.beat_bytes} for "
                             f"data_width {self.data_width} (bursts of at most 4 KB), "
                             f"not {self.max_burst!r}")
        check_int("max_outstanding", self.max_outstanding, 1, 64)

    @property
    def beat_bytes(self) -> int:
        """Bytes per AXI beat (``B``)."""
        return self.data_width // 8

    @property
    def size_log2(self) -> int:
        """``log2(B)``: the ``awsize``/``arsize`` of every burst."""
        return self.beat_bytes.bit_length() - 1

    @property
    def row_beats_width(self) -> int:
        """Bits of a per-row beat count: up to ``ceil(65535 / B) + 1`` beats."""
        return (65535 // self.beat_bytes + 2).bit_length()

    @property
    def read_buffer(self) -> int:
        """Beats of read data buffered: room for every outstanding burst at full length."""
        # At least 4: smaller Amaranth FIFOs have zero-width pointers (`[-1:0]` in Verilog).
        return max(4, self.max_burst * self.max_outstanding)

    @property
    def row_queue(self) -> int:
        """Row descriptors queued between a burst issuer and its data path."""
        return max(4, 2 * self.max_outstanding)

    @property
    def max_pending(self) -> int:
        """An upper bound on commands accepted but not yet completed, per direction."""
        return self.row_queue + self.max_outstanding + 8


class _Kind(enum.Enum, shape=2):
    # Nothing compares with 0 (Yosys writes `x == 0` as `!x`, which Verilator -Wall flags).
    EMPTY = 0   # initial value of registers only
    BUS = 1     # rows are transferred on the bus
    ZERO = 2    # out of window: rows are zero-filled (reads) or dropped (writes)
    NONE = 3    # malformed: no rows, only a completion


def _checked_layout(cfg: DmaConfig) -> data.StructLayout:
    """A checked command, with its first row's set-up computed by the check's last stage
    (the issuer takes it without arithmetic)."""
    a, s, nbits = cfg.addr_width, cfg.size_log2, cfg.row_beats_width
    return data.StructLayout({
        "addr": a, "rows": 16, "row_bytes": 16, "stride": a, "kind": _Kind, "err": 3,
        "lm": s,                   # (row_bytes - 1) % B
        "nout_m1": nbits,          # stream beats of a row, minus one
        "single": 1,               # nout_m1 == 0
        "t": s + 1,                # addr % B + lm: its carry is the first row's `extra`
        "left": nbits,             # bus beats of the first row
        "in_block": nbits,         # of them, before the first max_burst boundary
        "fits": 1,                 # left <= in_block: the first row is one burst
        "next_addr": a,            # the second row's address
    })


def _burst_layout(addr_width: int) -> data.StructLayout:
    return data.StructLayout({"addr": addr_width, "len": 8})


def _row_layout(cfg: DmaConfig) -> data.StructLayout:
    s = cfg.size_log2
    return data.StructLayout({
        "kind": _Kind,
        "last": 1,                    # last row of its command
        "err": 3,                     # completion code of a ZERO or NONE command
        "o": s,                       # byte offset of the row start in its first bus beat
        "tail": s,                    # reads: (row_bytes-1) % B; writes: (o+row_bytes-1) % B
        "extra": 1,                   # the row spans nout + 1 bus beats (else nout)
        "nout_m1": cfg.row_beats_width,  # stream beats of the row, minus one
        "single": 1,                  # nout_m1 == 0
    })


_RESP_LAYOUT = data.StructLayout({"marker": 1, "last": 1, "err": 3})


def _resp_error(resp):
    """Map an AXI response code to a :class:`DmaError` code (OKAY/EXOKAY -> OK)."""
    return Mux(resp[1], resp[0] + 1, 0)


def _first(old, new):
    """The first error wins."""
    return Mux(old.any(), old, new)


def _is_zero(value):
    # Not `value == 0`: Yosys writes that as `!value`, which Verilator -Wall flags.
    return ~value.any()


def _shift_bytes(value, amount, *, right: bool):
    """Shift ``value`` by ``amount`` bytes, zero-filling, as log2 stages of constant shifts.

    Each stage is a mux between equal-width operands, which keeps the Verilog free of the
    truncating variable shifts that ``bit_select`` produces.
    """
    width = len(value)
    for j in range(len(amount)):
        n = min(8 << j, width)
        moved = (Cat(value[n:], Const(0, n)) if right else Cat(Const(0, n), value[:width - n]))
        value = Mux(amount[j], moved, value)
    return value


def _row_setup(m: Module, cfg: DmaConfig, addr, lm, nout_m1, name: str):
    """The set-up of a row starting at byte address ``addr``, with ``lm = (row_bytes - 1) %
    B`` and ``nout_m1`` stream beats minus one: ``(t, left, in_block)``, where ``t = addr %
    B + lm`` (its carry: the row spans one bus beat more than stream beats), ``left`` the
    row's bus beats and ``in_block`` the beats before the first max_burst boundary."""
    s = cfg.size_log2
    t = Signal(s + 1, name=f"{name}_t")
    m.d.comb += t.eq(addr[:s] + lm)
    return t, _bus_beats(nout_m1, t[s]), _block_beats(cfg, addr)


def _bus_beats(nout_m1, extra):
    """A row's bus beats: its stream beats, one more if it spans an extra bus beat."""
    return nout_m1 + 1 + extra


def _block_beats(cfg: DmaConfig, addr):
    """Bus beats from ``addr`` to the next ``max_burst`` boundary."""
    s, mb = cfg.size_log2, cfg.max_burst
    return mb - addr[s:s + (mb - 1).bit_length()] if mb > 1 else 1


class _RowIndex:
    """A beat index within the row at a row queue's head, and whether it is the row's last.

    ``last`` comes from registers (the index is zero, the index reached ``nout_m1``) and
    the descriptor's ``single`` bit: no comparison of the index with ``nout_m1`` stands
    between the index and the decisions that follow it.
    """

    def __init__(self, m: Module, row, width: int, name: str):
        self._row = row
        self.index = Signal(width, name=name)
        self.zero = Signal(init=1, name=f"{name}_zero")
        self._at_last = Signal(name=f"{name}_at_last")
        self.last = Signal(name=f"{name}_last")
        m.d.comb += self.last.eq(Mux(self.zero, row.single, self._at_last))

    def step(self, restart):
        """Statements for the next beat: index 0 if ``restart``, else the index plus one."""
        return [self.index.eq(Mux(restart, 0, self.index + 1)), self.zero.eq(restart),
                self._at_last.eq(~restart & ((self.index + 1)[:len(self.index)]
                                             == self._row.nout_m1))]

    def reset(self):
        return [self.index.eq(0), self.zero.eq(1), self._at_last.eq(0)]


class _CommandCheck(wiring.Component):
    """Classify commands: a six-stage pipeline (latch, partial products of the span, a
    copy of them in fabric registers, their sum, the comparisons, the output). Beside
    them, stages 3 to 5 set up the command's first row for the issuer.

    ``out.kind`` is ``NONE`` for ``rows == 0`` or ``row_bytes == 0``, ``ZERO`` when a byte
    of the command lies outside the window or past the address space, else ``BUS``.
    Rows never wrap around the address space once a command is ``BUS``. ``cmd.ready``
    comes from the stages' valid bits alone: a command is taken while a stage is free.
    """

    def __init__(self, cfg: DmaConfig):
        self._cfg = cfg
        a = cfg.addr_width
        super().__init__({
            "cmd": In(stream.Signature(command_layout(a))),
            "out": Out(stream.Signature(_checked_layout(cfg))),
            "window_base": In(a),
            "window_size": In(a + 1),
            "flush": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        a, sz = cfg.addr_width, cfg.size_log2
        cmd, out = self.cmd, self.out

        n = 5
        valid = [Signal(name=f"s{k}_valid") for k in range(1, n + 1)]
        st = [Signal(command_layout(a), name=f"s{k}") for k in range(1, n + 1)]
        move = [Signal(name=f"s{k}_move") for k in range(1, n + 1)]
        # Stage 2: (rows - 1) * stride, the start of the last row, as two 16 x 16 products
        # (one hard multiplier each, its operands loaded with stage 1 and its product
        # with stage 2, in its own registers on ECP5); one past the first row's last
        # byte; whether the command starts below the window. Stage 3: the products
        # copied into fabric registers (the hard multipliers may be placed far from this
        # logic: the route from them is then all of a stage); the room from the first
        # row's end to the window's end and to the address space's end. Stage 4: the
        # span, the products' sum. Stage 5: the span compared with both rooms. The
        # output stage only selects by registered bits. No stage adds more than two
        # numbers or compares more than two, and none has two carry chains in series.
        accept = Signal()
        m.d.comb += accept.eq(cmd.valid & cmd.ready)
        rows_m1 = (cmd.payload.rows - 1)[:16]
        span_lo, span_hi = (
            registered_product(m, rows_m1, part, name=f"span_{half}", ecp5=is_ecp5(platform),
                               a_en=accept, b_en=accept, p_en=move[0])
            for half, part in (("lo", cmd.payload.stride[:16]),
                               ("hi", cmd.payload.stride[16:])))
        base = Signal(a + 17)             # addr + row_bytes
        below = Signal()
        lo_3, hi_3 = Signal.like(span_lo), Signal.like(span_hi)
        # Both rooms are below 2**(a + 2), so a span whose high product alone reaches that
        # is outside (`big`); otherwise the span needs a + 3 bits (at least 33), and the
        # comparisons are that wide rather than the span's full 49 bits.
        cut = a + 2 - 16
        sw = max(a + 2, 32) + 1
        span = Signal(signed(sw + 2))      # never negative; as wide as the rooms (Verilator)
        room_w = Signal(signed(sw + 2))    # limit - base: may be negative
        room_a = Signal(signed(sw + 2))    # 2**a - base
        big = Signal()
        limit = Signal(a + 2)             # one past the window (registered; it is set
        #                                   by software before commands come)
        m.d.sync += limit.eq(self.window_base + self.window_size)
        out_free = Signal()
        m.d.comb += [
            out_free.eq(~out.valid | out.ready),
            move[n - 1].eq(valid[n - 1] & out_free),
            *(move[k].eq(valid[k] & (~valid[k + 1] | move[k + 1])) for k in range(n - 1)),
            cmd.ready.eq(~self.flush & ~Cat(*valid).all()),
        ]
        last = st[n - 1]                  # the stage the output loads from
        below_3, below_4 = Signal(), Signal()
        room_w3, room_a3 = Signal.like(room_w), Signal.like(room_a)
        outside, bad = Signal(), Signal()
        # The first row's set-up, for the issuer (which sets up the later rows itself):
        # row_bytes - 1 (stage 3), its carry into the first beat (stage 4), the row's bus
        # beats (stage 5).
        rb_m1 = Signal(16)
        lm = Signal(sz)
        m.d.comb += lm.eq(rb_m1[:sz])
        t_4, t_5 = Signal(sz + 1), Signal(sz + 1)
        t_next = Signal(sz + 1)
        m.d.comb += t_next.eq(st[2].addr[:sz] + lm)
        left, in_block = Signal(cfg.row_beats_width), Signal(cfg.row_beats_width)
        rb_m1_4, rb_m1_5 = Signal(16), Signal(16)
        nout5 = Signal(cfg.row_beats_width)
        m.d.comb += nout5.eq(rb_m1_5 >> sz)
        with m.If(self.flush):
            m.d.sync += [v.eq(0) for v in valid] + [out.valid.eq(0)]
        with m.Else():
            with m.If(accept):
                m.d.sync += [st[0].eq(cmd.payload), valid[0].eq(1)]
            with m.Elif(move[0]):
                m.d.sync += valid[0].eq(0)
            with m.If(move[0]):
                m.d.sync += [st[1].eq(st[0]), valid[1].eq(1),
                             base.eq(st[0].addr + st[0].row_bytes),
                             below.eq(st[0].addr < self.window_base)]
            with m.Elif(move[1]):
                m.d.sync += valid[1].eq(0)
            with m.If(move[1]):
                m.d.sync += [st[2].eq(st[1]), valid[2].eq(1),
                             lo_3.eq(span_lo), hi_3.eq(span_hi),
                             room_w3.eq(limit - base), room_a3.eq(2 ** a - base),
                             below_3.eq(below), rb_m1.eq(st[1].row_bytes - 1)]
            with m.Elif(move[2]):
                m.d.sync += valid[2].eq(0)
            with m.If(move[2]):
                m.d.sync += [st[3].eq(st[2]), valid[3].eq(1),
                             span.eq(lo_3 + (hi_3[:cut] << 16)),
                             big.eq(hi_3[cut:].any()),
                             room_w.eq(room_w3), room_a.eq(room_a3), below_4.eq(below_3),
                             t_4.eq(t_next), rb_m1_4.eq(rb_m1)]
            with m.Elif(move[3]):
                m.d.sync += valid[3].eq(0)
            with m.If(move[3]):
                m.d.sync += [st[4].eq(st[3]), valid[4].eq(1),
                             # The last row ends past the window (or past the address
                             # space, which is outside anyway) iff the span exceeds
                             # the room.
                             outside.eq(below_4 | big | (span > room_a) | (span > room_w)),
                             bad.eq(_is_zero(st[3].rows) | _is_zero(st[3].row_bytes)),
                             t_5.eq(t_4), rb_m1_5.eq(rb_m1_4),
                             left.eq(_bus_beats(rb_m1_4 >> sz, t_4[sz])),
                             in_block.eq(_block_beats(cfg, st[3].addr))]
            with m.Elif(move[4]):
                m.d.sync += valid[4].eq(0)
            with m.If(move[4]):
                p = out.payload
                m.d.sync += [
                    out.valid.eq(1),
                    p.addr.eq(last.addr), p.rows.eq(last.rows), p.row_bytes.eq(last.row_bytes),
                    p.stride.eq(last.stride),
                    p.lm.eq(rb_m1_5[:sz]), p.nout_m1.eq(nout5), p.single.eq(_is_zero(nout5)),
                    p.t.eq(t_5), p.left.eq(left), p.in_block.eq(in_block),
                    p.fits.eq(left <= in_block),
                    p.next_addr.eq(last.addr + last.stride),
                ]
                with m.If(bad):
                    m.d.sync += [p.kind.eq(_Kind.NONE), p.err.eq(DmaError.BAD_COMMAND)]
                with m.Elif(outside):
                    m.d.sync += [p.kind.eq(_Kind.ZERO), p.err.eq(DmaError.OUT_OF_WINDOW)]
                with m.Else():
                    m.d.sync += [p.kind.eq(_Kind.BUS), p.err.eq(DmaError.OK)]
            with m.Elif(out.ready):
                m.d.sync += out.valid.eq(0)
        return m


class _BurstIssuer(wiring.Component):
    """Walk the rows of checked commands: issue bursts on ``ax``, push row descriptors.

    A burst starts at a beat-aligned address and ends at the row's end or at a
    ``max_burst``-beat boundary, whichever comes first; ``max_burst * B`` divides 4 KB, so
    no burst crosses a 4 KB boundary. One burst is issued per cycle while ``room`` is high
    and ``credit_ok`` says the burst fits the read buffer. ``ax`` follows AXI rules: once
    valid, it holds until accepted, even while ``flush`` stops the walk.
    """

    def __init__(self, cfg: DmaConfig, *, write: bool):
        self._cfg = cfg
        self._write = write
        a = cfg.addr_width
        super().__init__({
            "cmd": In(stream.Signature(_checked_layout(cfg))),
            "ax": Out(stream.Signature(_burst_layout(a))),
            "row": Out(stream.Signature(_row_layout(cfg))),
            "credit_ok": In(1),
            "room": In(1),
            "issued": Out(1),
            "issued_beats": Out(range(cfg.max_burst + 1)),
            "busy": Out(1),
            "flush": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        a, s, mb = cfg.addr_width, cfg.size_log2, cfg.max_burst
        c, ax, row = self.cmd.payload, self.ax, self.row
        nbits = cfg.row_beats_width

        kind = Signal(_Kind)
        err = Signal(3)
        rows_left = Signal(16)
        stride = Signal(a)
        nout_m1 = Signal(nbits)
        single = Signal()                 # nout_m1 == 0
        lm = Signal(s)                    # (row_bytes - 1) % B
        # The current row: the next burst's beat address, the row's bus beats not yet
        # issued, the beats before the next max_burst boundary (`in_block`, and
        # `in_block + max_burst`), whether the next burst ends the row, its byte offsets.
        beat = Signal(a - s)
        beats_left = Signal(nbits)
        in_block = Signal(nbits, init=mb)
        reach_bits = max(nbits, (2 * mb).bit_length())
        reach = Signal(reach_bits, init=2 * mb)
        row_end = Signal()
        o = Signal(s)
        tail = Signal(s)
        extra = Signal()
        row_first = Signal()              # the next burst is the first of its row
        # The next row, set up while the current one issues (so a row's end takes it from
        # registers, with no arithmetic behind the issue decision), and the start address
        # of the row after it.
        nx_beat = Signal(a - s)
        nx_left = Signal(nbits)
        nx_in_block = Signal(nbits)
        nx_o, nx_tail = Signal(s), Signal(s)
        nx_extra = Signal()
        nxt = Signal(a)

        def set_up_next(addr, lm_, nout_m1_, name):
            """Statements setting up the row at ``addr`` as the next one (its arithmetic
            is computed outside any condition: the decisions only enable the loads)."""
            t, left, first_block = _row_setup(m, cfg, addr, lm_, nout_m1_, name)
            return [nx_beat.eq(addr[s:]), nx_o.eq(addr[:s]), nx_extra.eq(t[s]),
                    nx_in_block.eq(first_block), nx_left.eq(left),
                    nx_tail.eq(t[:s] if self._write else lm_)]

        from_nxt = set_up_next(nxt, lm, nout_m1, "row_after_next")
        from_cmd = set_up_next(c.next_addr, c.lm, c.nout_m1, "second_row")

        # Widths match wherever two signals are compared (Verilator -Wall).
        # The burst's length and whether it ends the row come from registers: `row_end`
        # is kept for the next burst as each one issues. A burst that goes on in its row
        # leaves `beats_left - in_block` beats and a whole block, so the next one ends
        # the row iff `beats_left <= in_block + max_burst` (`reach`); a row's end loads
        # the next row, which ends with its first burst iff its beats fit its first
        # block. Both comparisons read registers only; the issue decision selects.
        # The next state is computed as if the burst stopped at the boundary, beside the
        # decision rather than behind it: a burst that ends its row leaves `beat` and
        # `beats_left` to the next row's set-up (or to the next command), so only the
        # burst's length selects by the row end, between two registers minus one.
        blen = Signal(nbits)
        left_m1, block_m1 = Signal(nbits), Signal(nbits)
        cont_end, next_fits = Signal(), Signal()
        m.d.comb += [
            blen.eq(Mux(row_end, beats_left, in_block)),
            left_m1.eq(beats_left - 1), block_m1.eq(in_block - 1),
            cont_end.eq(Cat(beats_left, Const(0, reach_bits - nbits)) <= reach),
            next_fits.eq(nx_left <= nx_in_block),
        ]

        bus_ok = Signal()
        go = Signal()
        m.d.comb += [
            self.cmd.ready.eq(~self.busy & ~self.flush),
            bus_ok.eq(self.busy & ~self.flush & (kind == _Kind.BUS) & self.room
                      & self.credit_ok & (~ax.valid | ax.ready)),
            row.valid.eq(Mux(kind == _Kind.BUS, bus_ok & row_first,
                             self.busy & ~self.flush)),
            go.eq(bus_ok & (~row_first | row.ready)),
            row.payload.kind.eq(kind),
            row.payload.last.eq(rows_left == 1),
            row.payload.err.eq(err),
            row.payload.o.eq(o),
            row.payload.tail.eq(tail),
            row.payload.extra.eq(extra),
            row.payload.nout_m1.eq(nout_m1),
            row.payload.single.eq(single),
            self.issued.eq(go),
            self.issued_beats.eq(blen),
        ]

        with m.If(go):
            m.d.sync += [
                ax.valid.eq(1),
                ax.payload.addr.eq(Cat(Const(0, s), beat)),
                ax.payload.len.eq(Mux(row_end, left_m1, block_m1)),
                beat.eq(beat + in_block),
                beats_left.eq(beats_left - in_block),
                row_first.eq(0),
                in_block.eq(mb),     # the row goes on from a max_burst boundary
                reach.eq(2 * mb),
                row_end.eq(cont_end),
            ]
            with m.If(row_end):
                m.d.sync += rows_left.eq(rows_left - 1)
                with m.If(rows_left == 1):
                    m.d.sync += self.busy.eq(0)
                with m.Else():
                    m.d.sync += [
                        beat.eq(nx_beat), o.eq(nx_o), extra.eq(nx_extra), tail.eq(nx_tail),
                        beats_left.eq(nx_left), in_block.eq(nx_in_block),
                        reach.eq(nx_in_block + mb), row_end.eq(next_fits), row_first.eq(1),
                        *from_nxt,
                        nxt.eq(nxt + stride),
                    ]
        with m.Elif(ax.ready):
            m.d.sync += ax.valid.eq(0)

        with m.If((kind != _Kind.BUS) & row.valid & row.ready):
            m.d.sync += rows_left.eq(rows_left - 1)
            with m.If((kind == _Kind.NONE) | (rows_left == 1)):
                m.d.sync += self.busy.eq(0)

        with m.If(self.cmd.valid & self.cmd.ready):
            # The first row as the check set it up: no arithmetic here, so none is shared
            # with the next row's set-up behind the accept decision. The second row is
            # set up from the check's registers, and `nxt` becomes the third row's start.
            m.d.sync += [
                self.busy.eq(1), kind.eq(c.kind), err.eq(c.err), rows_left.eq(c.rows),
                stride.eq(c.stride), nout_m1.eq(c.nout_m1), single.eq(c.single),
                lm.eq(c.lm),
                beat.eq(c.addr[s:]), o.eq(c.addr[:s]), extra.eq(c.t[s]),
                in_block.eq(c.in_block), reach.eq(c.in_block + mb), row_end.eq(c.fits),
                tail.eq(c.t[:s] if self._write else c.lm),
                beats_left.eq(c.left), row_first.eq(1),
                *from_cmd,
                nxt.eq(c.next_addr + c.stride),
            ]
            # Zero-filled and dropped rows are whole stream beats; no byte offsets apply.
            with m.If(c.kind != _Kind.BUS):
                m.d.sync += [o.eq(0), extra.eq(0), tail.eq(c.lm)]

        with m.If(self.flush):
            m.d.sync += self.busy.eq(0)
        return m


class AxiDma(wiring.Component):
    """AXI4 DMA engine with independent 2D read and write engines (see the module docstring).

    Parameters
    ----------
    addr_width, data_width, id_width, max_burst, max_outstanding : int
        See :class:`DmaConfig`.

    Raises
    ------
    TypeError
        If a parameter is not an int.
    ValueError
        If a parameter is out of range; the message names it and its value.

    Notes
    -----
    Ports (``A = addr_width``, ``B = data_width / 8``):

    ``bus``
        AXI4 manager (:func:`~llmchip.rtl.axi.axi4_signature`).
    ``rd_cmd``, ``wr_cmd`` (in, stream)
        :func:`command_layout`: ``addr``, ``rows``, ``row_bytes``, ``stride``.
    ``rd_data`` (out, stream)
        ``data`` (``B`` bytes), ``last`` on the final beat of the command.
    ``wr_data`` (in, stream)
        ``data`` (``B`` bytes).
    ``rd_done``, ``wr_done`` (out, stream)
        ``error``: a :class:`DmaError` code, one beat per command, in command order.
    ``window_base`` (in, ``A``), ``window_size`` (in, ``A + 1``)
        The byte range commands may touch; sampled while a command is checked.
    ``abort_req`` (in), ``idle`` (out)
        Stop and flush both engines; no command active and nothing on the bus.
    ``bytes_read``, ``bytes_written`` (out, 32)
        Row bytes moved over the bus (wrapping counters), counted the cycle after each
        beat.
    """

    def __init__(self, addr_width: int = 32, data_width: int = 128, id_width: int = 1,
                 max_burst: int = 16, max_outstanding: int = 4):
        try:
            cfg = DmaConfig(addr_width, data_width, id_width, max_burst, max_outstanding)
        except (TypeError, ValueError) as exc:
            raise _rejected(self, exc) from None
        self.config = cfg
        a, d = cfg.addr_width, cfg.data_width
        super().__init__({
            "bus": Out(axi4_signature(a, d, cfg.id_width)),
            "rd_cmd": In(stream.Signature(command_layout(a))),
            "rd_data": Out(stream.Signature(read_data_layout(d))),
            "rd_done": Out(stream.Signature(DONE_LAYOUT)),
            "wr_cmd": In(stream.Signature(command_layout(a))),
            "wr_data": In(stream.Signature(write_data_layout(d))),
            "wr_done": Out(stream.Signature(DONE_LAYOUT)),
            "window_base": In(a),
            "window_size": In(a + 1),
            "abort_req": In(1),
            "idle": Out(1),
            "bytes_read": Out(32),
            "bytes_written": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        rd_pending, rd_bursts = self._elaborate_read(m)
        wr_pending, wr_bursts = self._elaborate_write(m)
        m.d.comb += self.idle.eq(~(rd_pending.any() | wr_pending.any() | rd_bursts.any()
                                   | wr_bursts.any()))
        return m

    def _front(self, m: Module, name: str, cmd, *, write: bool):
        """Add a command check and a burst issuer for ``cmd``; return them."""
        check = _CommandCheck(self.config)
        issuer = _BurstIssuer(self.config, write=write)
        m.submodules[f"{name}_check"] = check
        m.submodules[f"{name}_issuer"] = issuer
        wiring.connect(m, wiring.flipped(cmd), check.cmd)
        wiring.connect(m, check.out, issuer.cmd)
        m.d.comb += [check.window_base.eq(self.window_base),
                     check.window_size.eq(self.window_size)]
        return check, issuer

    def _abort_control(self, m: Module, name: str, cmd, done, quiet):
        """Count pending commands; on abort, once ``quiet``, complete them as ABORTED.

        Returns ``(mode, pending)``: ``mode`` is a register, high from the cycle after
        ``abort_req`` until every pending command has completed. (Commands are refused from
        ``abort_req``'s own cycle: the command checks see it directly.) Being a register,
        it reaches the engines' many decisions with no logic in front of it.
        """
        cfg = self.config
        pending = Signal(range(cfg.max_pending + 1), name=f"{name}_pending")
        aborting = Signal(name=f"{name}_aborting")
        mode = Signal(name=f"{name}_abort_mode")
        m.d.comb += mode.eq(aborting)
        m.d.sync += pending.eq(pending + (cmd.valid & cmd.ready) - (done.valid & done.ready))
        # Completion registers are loaded here (aborts) and by the engines, which come later
        # and therefore take priority; the clear on acceptance comes first.
        with m.If(done.valid & done.ready):
            m.d.sync += done.valid.eq(0)
        with m.If(self.abort_req):
            m.d.sync += aborting.eq(1)
        with m.Elif(quiet & _is_zero(pending)):
            m.d.sync += aborting.eq(0)
        # A completion already waiting in the register counts as pending; the rest abort.
        more = Mux(done.valid, pending > 1, pending.any())
        with m.If(mode & quiet & more & (~done.valid | done.ready)):
            m.d.sync += [done.valid.eq(1), done.payload.error.eq(DmaError.ABORTED)]
        return mode, pending

    # -- read engine ---------------------------------------------------------------

    def _elaborate_read(self, m: Module):
        cfg = self.config
        bus = self.bus
        s, nb, d_bits = cfg.size_log2, cfg.beat_bytes, cfg.data_width
        depth = cfg.read_buffer

        check, issuer = self._front(m, "rd", self.rd_cmd, write=False)
        m.submodules.rd_buffer = buf = SyncFIFOBuffered(width=d_bits + 2, depth=depth)
        # The buffer's head moves into a small queue of registers first: block RAM's
        # output is slow, and the realigner's shifter and selects follow it.
        m.submodules.rd_stage = stg = SyncFIFOBuffered(width=d_bits + 2, depth=3)
        m.d.comb += [stg.w_data.eq(buf.r_data), stg.w_en.eq(buf.r_rdy),
                     buf.r_en.eq(stg.w_rdy)]
        # Buffered: the row descriptor at the head comes from a register, not through the
        # queue's memory (descriptors are written as bursts issue, long before their data).
        m.submodules.rd_rows = rowq = SyncFIFOBuffered(width=_row_layout(cfg).size,
                                                       depth=cfg.row_queue)

        bursts = Signal(range(cfg.max_outstanding + 1), name="rd_bursts")
        # Buffer beats not yet promised to an issued burst (a register, so the issuer's
        # check of a burst against it is one comparison of registers).
        credit = Signal(range(depth + 1), name="rd_credit", init=depth)
        # Whether the next burst fits. With room for two longest bursts, a register: the
        # previous cycle's credit of at least 2 * max_burst beats leaves at least
        # max_burst now (one burst issues a cycle), so the issue decision waits for no
        # comparison. Smaller buffers compare the burst with the credit.
        credit_ok = Signal()
        if depth >= 2 * cfg.max_burst:
            m.d.sync += credit_ok.eq(credit >= 2 * cfg.max_burst)
        else:
            m.d.comb += credit_ok.eq(issuer.issued_beats <= credit)
        pop = Signal()
        quiet = Signal()
        mode, pending = self._abort_control(m, "rd", self.rd_cmd, self.rd_done, quiet)
        m.d.comb += [
            check.flush.eq(mode | self.abort_req),
            issuer.flush.eq(mode),
            quiet.eq(~(bursts.any() | buf.level.any() | stg.level.any() | rowq.level.any()
                       | issuer.busy)),
        ]

        # AR channel and the bookkeeping that bounds it.
        r_last = bus.rvalid & bus.rready & bus.rlast
        m.d.comb += [
            bus.arid.eq(0),
            bus.araddr.eq(issuer.ax.payload.addr),
            bus.arlen.eq(issuer.ax.payload.len),
            bus.arsize.eq(s),
            bus.arburst.eq(AxiBurst.INCR),
            bus.arvalid.eq(issuer.ax.valid),
            issuer.ax.ready.eq(bus.arready),
            issuer.room.eq(bursts < cfg.max_outstanding),
            issuer.credit_ok.eq(credit_ok),
            rowq.w_data.eq(issuer.row.payload),
            rowq.w_en.eq(issuer.row.valid),
            issuer.row.ready.eq(rowq.w_rdy),
        ]
        m.d.sync += [
            bursts.eq(bursts + issuer.issued - r_last),
            # Both outcomes from registers; the issue decision only selects one.
            credit.eq(Mux(issuer.issued, credit + pop - issuer.issued_beats, credit + pop)),
        ]

        # R channel: space was reserved before the burst was issued, so rready stays high.
        # Beats with an error response are zeroed on the way in.
        m.d.comb += [
            bus.rready.eq(buf.w_rdy),
            buf.w_en.eq(bus.rvalid),
            buf.w_data.eq(Cat(Mux(bus.rresp[1], 0, bus.rdata), bus.rresp)),
        ]

        # Data path: realign bus beats into stream beats, one row descriptor at a time.
        # `prev` holds bus beat j of the row and the buffer's head is beat j + 1; stream
        # beat j is their pair shifted down by o bytes. A row starts by taking its first
        # bus beat into `prev` (a cycle without output), except that an aligned row with
        # `prev` empty passes beats straight through. A row whose last stream beat needs no
        # new bus beat takes the next row's first beat in that cycle instead, so that short
        # unaligned rows cost no extra cycle; that beat's error belongs to the next bus row
        # and waits in `carry` (rows in between are not bus rows and have no bus beats).
        d = _row_layout(cfg)(rowq.r_data)
        cur = stg.r_data[:d_bits]
        beat_err = Signal(3)
        m.d.comb += beat_err.eq(_resp_error(stg.r_data[d_bits:]))

        have_prev = Signal()
        prev = Signal(d_bits)
        carry = Signal(3)
        oi = _RowIndex(m, d, cfg.row_beats_width, "oi")   # stream beat index in the row
        err_acc = Signal(3)
        # The output stage and a skid register behind it: the realigner emits while the
        # skid is empty, so whether it may go does not wait for the consumer's `ready`.
        out_valid, out_last = Signal(), Signal()
        out_err = Signal(3)                          # completion code, with a `last` beat
        out_data = Signal(d_bits)
        out_bytes = Signal(range(nb + 1))
        sk_valid, sk_last = Signal(), Signal()
        sk_err = Signal(3)
        sk_data = Signal(d_bits)
        sk_bytes = Signal(range(nb + 1))
        taken = Signal()
        done = self.rd_done

        bus_row = Signal()
        last_out = Signal()
        cmd_end = Signal()
        absorb = Signal()      # take the row's first bus beat without emitting
        consumes = Signal()    # this row's next bus beat is taken
        flush = Signal()       # the row's last stream beat comes from `prev` alone
        emits = Signal()
        none_row = Signal()
        last_held = Signal()   # a command's last beat waits: its completion follows it
        go = Signal()
        new_err = Signal(3)
        m.d.comb += [
            bus_row.eq(d.kind == _Kind.BUS),
            last_out.eq(oi.last),
            cmd_end.eq(last_out & d.last),
            absorb.eq(bus_row & d.o.any() & ~have_prev),
            consumes.eq(bus_row & (~have_prev | ~last_out | d.extra)),
            flush.eq(bus_row & have_prev & last_out & ~d.extra),
            none_row.eq(d.kind == _Kind.NONE),
            emits.eq(~absorb & ~none_row),
            last_held.eq((out_valid & out_last) | (sk_valid & sk_last)),
            taken.eq(self.rd_data.valid & self.rd_data.ready),
            # Registers only: a row without bus beats waits for the completion register
            # to be empty, not for the client to take what is in it this cycle.
            go.eq(~mode & rowq.r_rdy & (~consumes | stg.r_rdy) & (~emits | ~sk_valid)
                  & (~none_row | (~last_held & ~done.valid))),
            new_err.eq(_first(err_acc, _first(Mux(bus_row, carry, 0),
                                              Mux(consumes, beat_err, 0)))),
        ]

        # Stream lane k is row byte k: bus lane k + o of this beat pair.
        shifted = Signal(d_bits)
        pair = Cat(Mux(have_prev, prev, cur), cur)
        m.d.comb += shifted.eq(_shift_bytes(pair, d.o, right=True)[:d_bits])
        beat_data = Signal(d_bits)
        for k in range(nb):
            keep = bus_row & (~last_out | (d.tail >= k)) if k else bus_row
            m.d.comb += beat_data[8 * k:8 * k + 8].eq(Mux(keep, shifted[8 * k:8 * k + 8], 0))

        with m.If(taken):
            m.d.sync += [out_valid.eq(sk_valid), sk_valid.eq(0)]
            with m.If(sk_valid):
                m.d.sync += [out_last.eq(sk_last), out_err.eq(sk_err), out_bytes.eq(sk_bytes)]
        # The data registers load whenever they are free, from the skid if it holds a
        # beat, else from the realigner: only the valid bits (and the narrow fields)
        # follow the realigner's decision, which so reaches no enable of the data.
        with m.If(~out_valid | taken):
            m.d.sync += out_data.eq(Mux(sk_valid, sk_data, beat_data))
        with m.If(~sk_valid):
            m.d.sync += sk_data.eq(beat_data)

        with m.If(mode):
            m.d.comb += [stg.r_en.eq(1), rowq.r_en.eq(1)]
            m.d.sync += oi.reset()
            m.d.sync += [out_valid.eq(0), sk_valid.eq(0), have_prev.eq(0),
                         err_acc.eq(0), carry.eq(0)]
        with m.Elif(go):
            m.d.comb += stg.r_en.eq(consumes)
            with m.If(bus_row):
                m.d.sync += carry.eq(0)
            with m.If(absorb):
                m.d.sync += [prev.eq(cur), have_prev.eq(1), err_acc.eq(new_err)]
            with m.Else():
                with m.If(emits):
                    # `go` left the skid empty: the beat goes to the output stage if that is
                    # free at the clock edge, else behind it.
                    beat = (cmd_end, _first(new_err, d.err),
                            Mux(bus_row, Mux(last_out, d.tail + 1, nb), 0))
                    with m.If(out_valid & ~taken):
                        m.d.sync += [sk_valid.eq(1),
                                     *(r.eq(v) for r, v in zip(
                                         (sk_last, sk_err, sk_bytes), beat, strict=True))]
                    with m.Else():
                        m.d.sync += [out_valid.eq(1),
                                     *(r.eq(v) for r, v in zip(
                                         (out_last, out_err, out_bytes), beat, strict=True))]
                with m.If(consumes):
                    m.d.sync += prev.eq(cur)
                with m.If(last_out | none_row):
                    m.d.comb += rowq.r_en.eq(1)
                    m.d.sync += oi.step(restart=1)
                    with m.If(bus_row):
                        m.d.sync += have_prev.eq(0)
                    with m.If(flush & stg.r_rdy):
                        m.d.comb += stg.r_en.eq(1)
                        m.d.sync += [prev.eq(cur), have_prev.eq(1), carry.eq(beat_err)]
                with m.Else():
                    m.d.sync += oi.step(restart=0)
                with m.If(none_row):
                    m.d.sync += [done.valid.eq(1), done.payload.error.eq(d.err)]
                with m.If(cmd_end | none_row):
                    m.d.sync += err_acc.eq(0)
                with m.Else():
                    m.d.sync += err_acc.eq(new_err)
        m.d.comb += pop.eq(buf.r_en & buf.r_rdy)   # the beat left the buffer's credit

        # A command completes when its last beat is taken. That beat is offered only while
        # the completion register is free, and nothing else can load the register meanwhile
        # (a malformed command's completion waits for `last_held`), so it stays free.
        # An abort withdraws a beat on offer: its consumer is being reset along with the DMA.
        with m.If(self.rd_data.valid & self.rd_data.ready & out_last):
            m.d.sync += [done.valid.eq(1), done.payload.error.eq(out_err)]
        m.d.comb += [
            self.rd_data.valid.eq(out_valid & ~mode & ~(out_last & done.valid)),
            self.rd_data.payload.data.eq(out_data),
            self.rd_data.payload.last.eq(out_last),
        ]
        # Counted a cycle late, as the write engine counts.
        moved = Signal.like(out_bytes)
        m.d.sync += [moved.eq(Mux(self.rd_data.valid & self.rd_data.ready, out_bytes, 0)),
                     self.bytes_read.eq(self.bytes_read + moved)]
        return pending, bursts

    # -- write engine --------------------------------------------------------------

    def _elaborate_write(self, m: Module):
        cfg = self.config
        bus = self.bus
        s, nb, d_bits = cfg.size_log2, cfg.beat_bytes, cfg.data_width
        mo = cfg.max_outstanding

        check, issuer = self._front(m, "wr", self.wr_cmd, write=True)
        # The row descriptor and the burst length at the queues' heads come from registers
        # (buffered queues): they decide whether the W path takes a beat.
        m.submodules.wr_rows = rowq = SyncFIFOBuffered(width=_row_layout(cfg).size,
                                                       depth=cfg.row_queue)
        # Incoming beats wait in a small queue of registers, so `wr_data.ready` is a
        # register's comparison rather than the W path's decision.
        m.submodules.wr_in = win = SyncFIFOBuffered(width=d_bits, depth=3)
        # Bursts whose address was accepted (W beats may follow), and bursts whose W beats
        # were all sent (a B response will follow) or commands that need no response.
        # Its writes are not checked against `w_rdy` (at most `mo` bursts are outstanding);
        # a buffered queue holds one entry less while it refills its output register.
        # Each entry: the burst's length minus one, and whether that is zero.
        m.submodules.wr_bursts = bq = SyncFIFOBuffered(width=9, depth=max(2, mo) + 1)
        # Buffered too: the entry at its head, which decides `bready` and the completion,
        # comes from a register rather than through the queue's memory. An entry shows a
        # cycle after its write, still no later than its burst's B response can come (the
        # last W beat goes out of a register the cycle after the entry is written).
        m.submodules.wr_resps = cq = SyncFIFOBuffered(width=_RESP_LAYOUT.size, depth=mo + 3)

        bursts = Signal(range(mo + 1), name="wr_bursts")
        quiet = Signal()
        mode, pending = self._abort_control(m, "wr", self.wr_cmd, self.wr_done, quiet)
        # The input queue: an abort drains it and takes nothing new.
        m.d.comb += [win.w_data.eq(self.wr_data.payload.data.as_value()),
                     win.w_en.eq(self.wr_data.valid & ~mode),
                     self.wr_data.ready.eq(win.w_rdy & ~mode)]
        m.d.comb += [
            check.flush.eq(mode | self.abort_req),
            issuer.flush.eq(mode),
            quiet.eq(~(bursts.any() | bq.level.any() | cq.level.any() | rowq.level.any()
                       | win.level.any()
                       | issuer.busy | bus.wvalid)),
        ]

        b_fire = bus.bvalid & bus.bready
        m.d.comb += [
            bus.awid.eq(0),
            bus.awaddr.eq(issuer.ax.payload.addr),
            bus.awlen.eq(issuer.ax.payload.len),
            bus.awsize.eq(s),
            bus.awburst.eq(AxiBurst.INCR),
            bus.awvalid.eq(issuer.ax.valid),
            issuer.ax.ready.eq(bus.awready),
            issuer.room.eq(bursts < mo),
            issuer.credit_ok.eq(1),
            rowq.w_data.eq(issuer.row.payload),
            rowq.w_en.eq(issuer.row.valid),
            issuer.row.ready.eq(rowq.w_rdy),
            # W beats of a burst start only once its address was accepted.
            bq.w_data.eq(Cat(issuer.ax.payload.len, issuer.ax.payload.len == 0)),
            bq.w_en.eq(bus.awvalid & bus.awready),
        ]
        m.d.sync += bursts.eq(bursts + issuer.issued - b_fire)

        # W path: realign wr_data beats to the DRAM byte address.
        d = _row_layout(cfg)(rowq.r_data)
        blen_m1, b_single = bq.r_data[:8], bq.r_data[8]
        wi = _RowIndex(m, d, cfg.row_beats_width, "wi")   # bus beat index in the row
        past_in = Signal()                           # all wr_data beats of the row taken
        wb = Signal(8)                               # beat index in the burst
        # Whether the beat is its burst's last comes from registers, as for rows
        # (`_RowIndex`): index zero and the entry's `single` bit, or the index reached
        # the length.
        wb_zero, wb_at_last = Signal(init=1), Signal()
        prev = Signal(d_bits)
        w_free = Signal()
        burst_end = Signal()
        row_last_bus = Signal()
        row_last_in = Signal()
        needs_in = Signal()
        m.d.comb += [
            w_free.eq(~bus.wvalid | bus.wready),
            burst_end.eq(Mux(wb_zero, b_single, wb_at_last)),
            needs_in.eq(~past_in),
            row_last_in.eq(needs_in & wi.last),
            row_last_bus.eq(Mux(d.extra, past_in, row_last_in)),
        ]
        bus_ok = Signal()
        drop_ok = Signal()
        go_bus, go_drop, go_none, go_null = Signal(), Signal(), Signal(), Signal()
        m.d.comb += [
            bus_ok.eq(~mode & rowq.r_rdy & (d.kind == _Kind.BUS) & bq.r_rdy & w_free
                      & (~burst_end | cq.w_rdy)),
            drop_ok.eq(~mode & rowq.r_rdy & (d.kind == _Kind.ZERO)
                       & (~(row_last_in & d.last) | cq.w_rdy)),
            win.r_en.eq((bus_ok & needs_in) | drop_ok | mode),
            go_bus.eq(bus_ok & (~needs_in | win.r_rdy)),
            go_drop.eq(drop_ok & win.r_rdy),
            go_none.eq(~mode & rowq.r_rdy & (d.kind == _Kind.NONE) & cq.w_rdy),
            # After an abort, bursts already addressed still get their beats, with no strobes.
            go_null.eq(mode & bq.r_rdy & w_free & (~burst_end | cq.w_rdy)),
        ]

        cur = Signal(d_bits)
        m.d.comb += cur.eq(Mux(needs_in, win.r_data, 0))
        # Bus lane k is row byte k - o: this beat's lanes shifted up by o, the rest from prev.
        w_data = Signal(d_bits)
        w_strb = Signal(nb)
        m.d.comb += w_data.eq(_shift_bytes(Cat(prev, cur), d.o, right=False)[d_bits:])
        first = wi.zero
        for k in range(nb):
            after_start = ~first | (d.o <= k) if k < nb - 1 else 1
            before_end = (~row_last_bus | (d.tail >= k)) if k else 1
            m.d.comb += w_strb[k].eq(after_start & before_end)

        resp = Signal(_RESP_LAYOUT)
        with m.If(bus.wvalid & bus.wready):
            m.d.sync += bus.wvalid.eq(0)
        with m.If(go_bus | go_null):
            m.d.sync += [bus.wvalid.eq(1), bus.wlast.eq(burst_end),
                         wb.eq(Mux(burst_end, 0, wb + 1)), wb_zero.eq(burst_end),
                         wb_at_last.eq(~burst_end & ((wb + 1)[:8] == blen_m1))]
            with m.If(burst_end):
                m.d.comb += [bq.r_en.eq(1), cq.w_en.eq(1),
                             resp.last.eq(go_bus & row_last_bus & d.last)]
        # The W register's data and strobes load whenever it is free, not on the W
        # decision: without a beat `wvalid` is low and they do not matter, so the decision
        # reaches only the strobes' value and not the data's enables. (Aborted bursts get
        # no strobes and zero data.)
        with m.If(w_free):
            m.d.sync += [bus.wdata.eq(Mux(mode, 0, w_data)),
                         bus.wstrb.eq(Mux(go_bus, w_strb, 0))]
        with m.If(go_bus):
            m.d.sync += [prev.eq(Mux(row_last_bus, 0, cur)),
                         *wi.step(restart=row_last_bus),
                         past_in.eq(~row_last_bus & (past_in | row_last_in))]
            m.d.comb += rowq.r_en.eq(row_last_bus)
        with m.If(go_drop):
            m.d.sync += wi.step(restart=row_last_in)
            m.d.comb += rowq.r_en.eq(row_last_in)
            with m.If(row_last_in & d.last):
                m.d.comb += [cq.w_en.eq(1), resp.marker.eq(1), resp.err.eq(d.err)]
        with m.If(go_none):
            m.d.comb += [rowq.r_en.eq(1), cq.w_en.eq(1), resp.marker.eq(1),
                         resp.err.eq(d.err)]
        with m.If(mode):
            m.d.comb += rowq.r_en.eq(1)
            m.d.sync += [*wi.reset(), prev.eq(0), past_in.eq(0)]
        m.d.comb += cq.w_data.eq(resp)

        # B channel and completions, in command order.
        e = _RESP_LAYOUT(cq.r_data)
        done = self.wr_done
        done_free = ~done.valid | done.ready
        err_acc = Signal(3)
        new_err = Signal(3)
        m.d.comb += [
            bus.bready.eq(cq.r_rdy & ~e.marker & (mode | ~e.last | done_free)),
            new_err.eq(_first(err_acc, _resp_error(bus.bresp))),
        ]
        with m.If(b_fire):
            m.d.comb += cq.r_en.eq(1)
            with m.If(e.last & ~mode):
                m.d.sync += [done.valid.eq(1), done.payload.error.eq(new_err), err_acc.eq(0)]
            with m.Else():
                m.d.sync += err_acc.eq(new_err)
        with m.If(cq.r_rdy & e.marker & (mode | done_free)):
            m.d.comb += cq.r_en.eq(1)
            with m.If(~mode):
                m.d.sync += [done.valid.eq(1), done.payload.error.eq(e.err)]
        with m.If(mode):
            m.d.sync += err_acc.eq(0)

        # Counted a cycle late: the beat's byte count is registered first, so the bus's
        # handshake and strobes reach no carry chain.
        written = Signal(range(nb + 1))
        m.d.sync += [written.eq(Mux(bus.wvalid & bus.wready,
                                    sum(bus.wstrb[k] for k in range(nb)), 0)),
                     self.bytes_written.eq(self.bytes_written + written)]
        return pending, bursts
