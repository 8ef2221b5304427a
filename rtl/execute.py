"""Execute unit: runs LOAD_W and MATMUL instructions on the systolic array.

A weight feeder reads a tile's ``rows`` weight rows from the scratchpad into the array's
``w_in``; an activation feeder reads ``T`` activation rows into ``a_in``; results leave the
array ``rows + cols`` cycles later and are written (or added) to accumulator rows. The two
feeders work concurrently, so the next tile's weights load while the current tile streams
(the array itself pairs weight tiles with activation tiles in order). A MATMUL with
``k_steps = n >= 1`` is a K loop: an expander in front of the feeders issues it as the
micro-operations LOAD_W, MATMUL, LOAD_W, MATMUL, ... (step ``s`` loads the contiguous tile
at ``w_addr + s * rows`` and streams the activations at ``sp_addr + s * a_step``, every step
after the first accumulating), one per cycle at most and each as soon as its feeder is free,
so the loop runs cycle for cycle like the equivalent instruction sequence. Dependency tokens
are popped before an instruction starts (a loop's before its first step) and pushed when
it has completed: for MATMUL, when its last result row (a loop's, of its last step) has
been written to the accumulator.

Operands are range-checked before an instruction starts (a loop's over all its steps); one
that would read or write outside the scratchpad or accumulator, or has ``rows == 0``, is not
executed and is reported on ``error`` (the command processor stops the program). The check's
products (:func:`operand_terms`, a three-stage :class:`OperandTermsPipeline`) and from them
the dispatch flags (:func:`dispatch_flags`: the opcode's class, whether it loops,
whether its operands pass) can be computed on the way into the instruction's queue, by a
:class:`DispatchFlagsPipeline`, and travel beside it (``prechecked=True``): no multiplier
and no range comparison then lies between the queue's output register and the unit's
control, and the unit's decision to take an instruction starts from registers.
"""

from __future__ import annotations

import enum

from amaranth.hdl import Cat, Module, Mux, Signal, Value, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from llmchip.config import AcceleratorConfig
from llmchip.sw import isa

from .accumulator import Accumulator, write_layout
from .dsp import is_ecp5, registered_product
from .scratchpad import Scratchpad
from .systolic import SystolicArray

__all__ = ["DispatchFlagsPipeline", "ExecuteUnit", "ExecError", "FLAGS_LAYOUT",
           "OperandTermsPipeline", "dispatch_flags", "operand_terms", "terms_layout",
           "term_factors", "terms_of_factors"]


class ExecError(enum.IntEnum):
    """Why the execute unit refused an instruction."""

    NONE = 0
    BAD_OPCODE = 1     #: not LOAD_W or MATMUL
    BAD_OPERAND = 2    #: rows == 0, or an address range outside a memory


def terms_layout(config: AcceleratorConfig) -> data.StructLayout:
    """Layout of the products the operand check of ``config``'s execute unit needs."""
    R = config.rows
    return data.StructLayout({
        "span": unsigned(30),                          # (rows - 1) * sp_stride
        "a_last": unsigned(28),                        # (k_steps - 1) * a_step of a loop
        "w_end": unsigned(12 + R.bit_length()),        # k_steps * R
    })


#: Decisions about an instruction that the execute unit's dispatch starts from.
FLAGS_LAYOUT = data.StructLayout({
    "is_lw": 1, "is_mm": 1,
    "looped": 1,       # a MATMUL with k_steps != 0
    "one_step": 1,     # k_steps == 1
    "ok": 1,           # the operands pass the range check (LOAD_W or MATMUL)
    "rows_any": 1,     # MATMUL rows != 0
    "rows_one": 1,     # MATMUL rows == 1
})


def _factors_layout(config: AcceleratorConfig) -> data.StructLayout:
    return data.StructLayout({
        "span_rows": unsigned(14), "span_stride": unsigned(16),   # rows - 1 (mod 2**14)
        "last_step": unsigned(12), "a_step": unsigned(16),
        "w_end": terms_layout(config)["w_end"].shape,
    })


def term_factors(config: AcceleratorConfig, word) -> Value:
    """The first stage of :func:`operand_terms`: the factors of its products, decoded from
    instruction ``word`` (no multiply; the weight rows, a product with a constant, too)."""
    R = config.rows
    mm = data.View(isa.layout(isa.Opcode.MATMUL), word)
    lw = data.View(isa.layout(isa.Opcode.LOAD_W), word)
    is_lw = word[:4] == isa.Opcode.LOAD_W
    return Cat(Mux(is_lw, R - 1, (mm.rows - 1)[:14]), Mux(is_lw, lw.sp_stride, mm.sp_stride),
               Mux(mm.k_steps != 0, (mm.k_steps - 1)[:12], 0), mm.a_step, mm.k_steps * R)


def terms_of_factors(config: AcceleratorConfig, factors) -> Value:
    """The second stage of :func:`operand_terms`: its products from :func:`term_factors`
    (one multiplier each, no logic before or after them)."""
    f = data.View(_factors_layout(config), factors)
    return _terms(config, f.span_rows * f.span_stride, f.last_step * f.a_step, f.w_end)


def _terms(config: AcceleratorConfig, span, a_last, w_end) -> Value:
    layout = terms_layout(config)
    terms = {"span": span, "a_last": a_last, "w_end": w_end}
    return Cat(*(terms[name][:shape.width] for name, shape in layout))


class OperandTermsPipeline:
    """:func:`operand_terms` as a three-stage pipeline, for a queue's side bits (see
    :class:`~llmchip.rtl.cmdproc.CommandProcessor`): the factors; the multipliers'
    operands; their products (the last two in the hard multipliers' own registers on
    ECP5). It runs every cycle, with no enables: its output is the terms of the word
    three cycles before."""

    latency = 3

    def __init__(self, config: AcceleratorConfig):
        self.config = config

    def __call__(self, word) -> Value:
        return operand_terms(self.config, word)

    def build(self, m: Module, platform, word) -> Value:
        """Return the terms of ``word`` :attr:`latency` cycles later, built in ``m``."""
        factors = Signal(_factors_layout(self.config), name="terms_factors")
        m.d.sync += factors.eq(term_factors(self.config, word))
        ecp5 = is_ecp5(platform)
        span = registered_product(m, factors.span_rows, factors.span_stride,
                                  name="terms_span", ecp5=ecp5)
        a_last = registered_product(m, factors.last_step, factors.a_step,
                                    name="terms_a_last", ecp5=ecp5)
        w_end = [Signal(len(factors.w_end), name=f"terms_w_end{k}") for k in range(2)]
        m.d.sync += [w_end[0].eq(factors.w_end), w_end[1].eq(w_end[0])]
        return _terms(self.config, span, a_last, w_end[1])


def _below(value, size: int) -> Value:
    """``value < size`` for an unsigned ``value`` (a negative sum's bits read as a large
    number); for a power of two, a test of the high bits (no carry chain)."""
    if size & (size - 1) == 0:
        return ~value[size.bit_length() - 1:].any()
    return value < size


def _sums(config: AcceleratorConfig, payload) -> dict:
    """The two-operand sums of the range checks of ``payload`` (an instruction with its
    :func:`operand_terms` above it): a stage of :class:`DispatchFlagsPipeline`."""
    layout = terms_layout(config)
    word = payload[:isa.INSN_BITS]
    terms = data.View(layout, payload[isa.INSN_BITS:][:layout.size])
    mm = data.View(isa.layout(isa.Opcode.MATMUL), word)
    lw = data.View(isa.layout(isa.Opcode.LOAD_W), word)
    return {"lw_end": lw.sp_addr + terms.span,      # LOAD_W: its last row
            "mm_a": mm.sp_addr + terms.a_last,      # MATMUL: its last step's first row
            "span": terms.span,
            # The last rows (negative for rows == 0 or an empty loop, which the
            # flags refuse by other terms).
            "acc_last": mm.acc_addr + mm.rows - 1,
            "w_last": mm.w_addr + terms.w_end - 1}


def _sums_layout(config: AcceleratorConfig) -> data.StructLayout:
    """As wide as each sum (Amaranth arithmetic widens): no sum is truncated."""
    payload = Signal(isa.INSN_BITS + terms_layout(config).size)
    return data.StructLayout({name: len(v) for name, v in _sums(config, payload).items()})


def _flag_sums(config: AcceleratorConfig, payload) -> Value:
    return Cat(*_sums(config, payload).values())


def _flags_of_sums(config: AcceleratorConfig, sp_rows: int, acc_rows: int, word,
                   sums) -> Value:
    """The dispatch flags of ``word`` from its :func:`_flag_sums`."""
    v = data.View(_sums_layout(config), sums)
    op = word[:4]
    mm = data.View(isa.layout(isa.Opcode.MATMUL), word)
    is_mm = op == isa.Opcode.MATMUL
    is_lw = op == isa.Opcode.LOAD_W
    looped = is_mm & (mm.k_steps != 0)
    # Every range: start + (count - 1) * stride < size. A loop is checked whole before
    # its first step: addresses grow with the step, so its last step bounds every other.
    lw_ok = _below(v.lw_end, sp_rows)
    mm_ok = ((mm.rows != 0)
             & _below(v.mm_a + v.span, sp_rows)
             & _below(v.acc_last, acc_rows)
             & (~looped | _below(v.w_last, sp_rows)))
    flags = {"is_lw": is_lw, "is_mm": is_mm, "looped": looped,
             "one_step": mm.k_steps == 1, "ok": Mux(is_lw, lw_ok, mm_ok),
             "rows_any": mm.rows != 0, "rows_one": mm.rows == 1}
    return Cat(*(flags[name] for name, _ in FLAGS_LAYOUT))


def dispatch_flags(config: AcceleratorConfig, sp_rows: int, acc_rows: int,
                   payload) -> Value:
    """The execute unit's dispatch flags (``FLAGS_LAYOUT``) of ``payload``, an
    instruction with its :func:`operand_terms` above it, for a scratchpad of ``sp_rows``
    and an accumulator of ``acc_rows`` rows. Pure expressions: with ``prechecked``, the
    instruction's queue computes them (:class:`DispatchFlagsPipeline`)."""
    return _flags_of_sums(config, sp_rows, acc_rows, payload[:isa.INSN_BITS],
                          _flag_sums(config, payload))


class DispatchFlagsPipeline:
    """The execute unit's dispatch flags (:func:`dispatch_flags`) as a six-stage
    pipeline, for a queue's side bits (see :class:`~llmchip.rtl.cmdproc.CommandProcessor`):
    the three stages of :class:`OperandTermsPipeline`; a copy of the terms in fabric
    registers (the hard multipliers may be placed far away: the route from them is then
    a stage of its own); the range checks' two-operand sums; their comparisons and the
    decoding into a register. The word follows the terms through a delay line of its own
    (Yosys merges it with the queue's identical one). Its output is the flags of the word
    six cycles before; an :class:`ExecuteUnit` with the same memory sizes takes them with
    ``prechecked=True``."""

    def __init__(self, config: AcceleratorConfig, sp_rows: int, acc_rows: int):
        self.config, self.sp_rows, self.acc_rows = config, sp_rows, acc_rows
        self.terms = OperandTermsPipeline(config)
        self.latency = self.terms.latency + 3

    def __call__(self, word) -> Value:
        return dispatch_flags(self.config, self.sp_rows, self.acc_rows,
                              Cat(word, self.terms(word)))

    def build(self, m: Module, platform, word) -> Value:
        """Return the flags of ``word`` :attr:`latency` cycles later, built in ``m``."""
        far = self.terms.build(m, platform, word)
        terms = Signal(len(far), name="terms_near")
        m.d.sync += terms.eq(far)
        delayed = [word]
        for k in range(self.latency - 1):
            reg = Signal(len(word), name=f"flags_word{k}")
            m.d.sync += reg.eq(delayed[-1])
            delayed.append(reg)
        sums = Signal(_sums_layout(self.config), name="flag_sums")
        m.d.sync += sums.eq(_flag_sums(self.config, Cat(delayed[-2], terms)))
        flags = Signal(FLAGS_LAYOUT, name="dispatch_flags")
        m.d.sync += flags.eq(_flags_of_sums(self.config, self.sp_rows, self.acc_rows,
                                            delayed[-1], sums))
        return flags.as_value()


def operand_terms(config: AcceleratorConfig, word) -> Value:
    """Return the products of the operand check of instruction ``word``, as a value.

    The products are all the check multiplies: the span of a LOAD_W tile (``(R - 1) *
    sp_stride``) or of a MATMUL's activation rows (``(rows - 1) * sp_stride``, rows taken
    modulo 2**14 so ``rows == 0`` gives a large span), a loop's last activation offset
    (``(k_steps - 1) * a_step``, 0 without a loop) and a loop's weight rows
    (``k_steps * R``). Pure expressions of ``word``: usable in any module. It is
    ``terms_of_factors(term_factors(word))``; a pipeline may register between the two.
    """
    return terms_of_factors(config, term_factors(config, word))


class ExecuteUnit(wiring.Component):
    """Execute unit for a weight-stationary ``config`` with the given memory sizes.

    Parameters
    ----------
    config : AcceleratorConfig
        Must use the weight-stationary dataflow.
    sp_rows, acc_rows : int
        Rows of the scratchpad and the accumulator.
    prechecked : bool
        ``insn`` carries the instruction's dispatch flags (:func:`dispatch_flags`, a
        ``FLAGS_LAYOUT``) in the bits above ``isa.INSN_BITS``, computed where it was
        queued (:class:`DispatchFlagsPipeline`); otherwise the unit computes them.

    Raises
    ------
    ValueError
        If the dataflow is not ``"ws"`` or a size is not positive.
    """

    #: Rows buffered between a scratchpad read and the array: enough to cover the few cycles
    #: between one instruction's last read and the next one's first row (no bubble).
    FEED_DEPTH = 8

    def __init__(self, config: AcceleratorConfig, sp_rows: int, acc_rows: int, *,
                 prechecked: bool = False):
        if config.dataflow != "ws":
            from .pe import _rejected
            raise _rejected(self, ValueError(
                f"the execute unit streams weight-stationary tiles; dataflow must be 'ws', "
                f"not {config.dataflow!r}"))
        self.config, self.sp_rows, self.acc_rows = config, sp_rows, acc_rows
        self.prechecked = prechecked
        sp_addr = unsigned(max(1, (sp_rows - 1).bit_length()))
        row = data.ArrayLayout(unsigned(8), max(config.rows, config.cols))
        insn_bits = isa.INSN_BITS + (FLAGS_LAYOUT.size if prechecked else 0)
        super().__init__({
            "insn": In(stream.Signature(unsigned(insn_bits))),
            "sp_a_req": Out(stream.Signature(sp_addr)),
            "sp_a_resp": In(stream.Signature(row, always_ready=True)),
            "sp_b_req": Out(stream.Signature(sp_addr)),
            "sp_b_resp": In(stream.Signature(row, always_ready=True)),
            "acc_w": Out(stream.Signature(write_layout(config.cols, acc_rows,
                                                       config.acc_width), always_ready=True)),
            # Dependency tokens: *_avail from the token counters, *_pop / *_push pulses.
            "ld_avail": In(1), "ld_pop": Out(1), "ld_push": Out(2),
            "st_avail": In(1), "st_pop": Out(1), "st_push": Out(2),
            "busy": Out(1),
            "error": Out(2),           # ExecError of the refused instruction, sticky
            "error_valid": Out(1),
            "array_busy": Out(1),      # a row entered the array this cycle
            "stall_weights": Out(1),   # a tile's first row waits for its weights
            "stall_operand": Out(1),   # the array could take a row but none is ready
            "stall_token": Out(1),     # the next instruction waits for a dependency token
        })

    def predecode(self, payload) -> Value:
        """The dispatch flags of ``payload`` for this unit's memories
        (:func:`dispatch_flags`)."""
        return dispatch_flags(self.config, self.sp_rows, self.acc_rows, payload)

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        R, C = cfg.rows, cfg.cols
        m.submodules.array = array = SystolicArray(cfg)

        # -- dispatch: decode, wait for tokens, check operands, hand to a feeder ----------
        word = self.insn.payload[:isa.INSN_BITS]
        flags = Signal(FLAGS_LAYOUT)
        if self.prechecked:
            m.d.comb += flags.eq(self.insn.payload[isa.INSN_BITS:])
        else:
            m.d.comb += flags.eq(self.predecode(Cat(word, operand_terms(cfg, word))))
        mm = data.View(isa.layout(isa.Opcode.MATMUL), word)
        lw = data.View(isa.layout(isa.Opcode.LOAD_W), word)
        is_mm, is_lw, looped, ok = flags.is_mm, flags.is_lw, flags.looped, flags.ok

        # Loop expander: the instruction stays on `insn` (not yet accepted) while its steps
        # issue as micro-operations, a LOAD_W then a MATMUL per step. Whether the step is
        # the first or the last are registers beside it (the last from the instruction's
        # `one_step` while the step is 0), so no compare of the step precedes the take.
        step = Signal.like(mm.k_steps)      # current step of a loop
        step_zero = Signal(init=1)          # step == 0
        step_at_last = Signal()             # step == k_steps - 1, for step != 0
        step_mm = Signal()                  # its LOAD_W has issued; its MATMUL is next
        w_off = Signal(16)                  # step * R
        a_off = Signal(16)                  # step * a_step
        first = Signal()                    # nothing of this instruction has issued yet
        final = Signal()                    # its last micro-operation is next
        u_lw, u_mm = Signal(), Signal()
        m.d.comb += [
            first.eq(step_zero & ~step_mm),
            final.eq(~looped | (step_mm & Mux(step_zero, flags.one_step, step_at_last))),
            u_lw.eq(is_lw | (looped & ~step_mm)),
            u_mm.eq(is_mm & ~u_lw),
        ]

        # Feeder command registers.
        w_busy = Signal()
        w_addr = Signal(16)
        w_stride = Signal(16)
        w_left = Signal(range(R + 1))       # reads still to issue
        # `left == 1` (and for activations `left != 0`; a busy weight feeder always has
        # reads left) kept as registers beside the counts: the issue and take decisions
        # start from them, not from the counts' compares.
        w_one = Signal()
        w_push_ld, w_push_st = Signal(), Signal()
        a_busy = Signal()
        a_addr = Signal(16)
        a_stride = Signal(16)
        a_left = Signal(14)
        a_any, a_one = Signal(), Signal()
        a_acc = Signal(16)
        a_accumulate = Signal()
        a_push_ld, a_push_st = Signal(), Signal()

        need_ld = word[isa.flag_bit("pop_prev")] & first
        need_st = word[isa.flag_bit("pop_next")] & first
        push_ld = word[isa.flag_bit("push_prev")] & final
        push_st = word[isa.flag_bit("push_next")] & final
        tokens_ok = (~need_ld | self.ld_avail) & (~need_st | self.st_avail)
        error_valid = Signal()
        # A feeder takes its next instruction on the cycle it issues the last read of the
        # current one, so consecutive MATMULs stream with no gap and weights load early.
        a_finishing, w_finishing = Signal(), Signal()
        unit_free = Mux(u_mm, ~a_busy | a_finishing, Mux(u_lw, ~w_busy | w_finishing, 1))
        take = Signal()                     # a micro-operation (or a refusal) issues
        # A refused loop leaves `insn` the cycle after its refusal, which keeps the range
        # check's multipliers out of the path to `insn.ready`.
        refused = Signal()
        m.d.sync += refused.eq(take & ~ok & ~final)
        m.d.comb += [
            self.stall_token.eq(self.insn.valid & ~tokens_ok & ~error_valid),
            take.eq(self.insn.valid & tokens_ok & unit_free & ~error_valid),
            self.insn.ready.eq((take & final) | refused),
            self.ld_pop.eq(take & need_ld),
            self.st_pop.eq(take & need_st),
        ]
        m.d.comb += self.error_valid.eq(error_valid)
        with m.If(take & looped & ok):
            with m.If(~step_mm):
                m.d.sync += step_mm.eq(1)
            with m.Elif(final):
                m.d.sync += [step.eq(0), step_zero.eq(1), step_at_last.eq(0), step_mm.eq(0),
                             w_off.eq(0), a_off.eq(0)]
            with m.Else():
                m.d.sync += [step.eq(step + 1), step_zero.eq(0),
                             step_at_last.eq((step + 2)[:len(step)] == mm.k_steps),
                             step_mm.eq(0), w_off.eq(w_off + R), a_off.eq(a_off + mm.a_step)]

        # -- weight feeder ---------------------------------------------------------------
        # The tile's last row carries its LOAD_W's push flags, so the feeder can take the
        # next LOAD_W as soon as it has issued this one's last read: the next tile's rows
        # queue behind this one's and enter the shadow weights as soon as the array frees
        # them (waiting for this tile to enter the array would add the read latency to
        # every tile).
        m.submodules.wfifo = wfifo = fifo.SyncFIFOBuffered(width=8 * C + 2,
                                                           depth=self.FEED_DEPTH)
        # Issue a read only when its row is sure to find room in the FIFO. The room is a
        # register, the count of the previous cycle with one entry to spare (it grows by
        # at most one a cycle), so the feeder's issue (and the take of the instruction
        # that follows it) does not wait for the count's carry chain.
        # Reads in flight: one bit per cycle of the scratchpad's read latency.
        lat = Scratchpad.READ_LATENCY
        w_inflight = Signal(lat)
        w_used = Signal.like(wfifo.level)
        w_room = Signal()
        m.d.comb += w_used.eq(wfifo.level + sum(w_inflight[i] for i in range(lat)))
        m.d.sync += w_room.eq(w_used < self.FEED_DEPTH - 1)
        w_issue = Signal()
        w_last = Signal()
        w_tag = Signal(2)                       # pushes, on the tile's last row
        m.d.comb += [
            self.sp_b_req.valid.eq(w_busy & w_room),
            self.sp_b_req.payload.eq(w_addr),
            w_issue.eq(self.sp_b_req.valid & self.sp_b_req.ready),
            w_last.eq(w_one),
            w_tag.eq(Mux(w_last, Cat(w_push_ld, w_push_st), 0)),
            w_finishing.eq(w_issue & w_last),
        ]
        m.d.sync += w_inflight.eq(Cat(w_issue, w_inflight[:-1]))
        w_tag_q = w_tag
        for i in range(lat):
            w_tag_d = Signal(2, name=f"w_tag_d{i}")
            m.d.sync += w_tag_d.eq(w_tag_q)
            w_tag_q = w_tag_d
        with m.If(w_issue):
            m.d.sync += [w_addr.eq(w_addr + w_stride), w_left.eq(w_left - 1),
                         w_one.eq(w_left == 2)]
            with m.If(w_last):
                m.d.sync += w_busy.eq(0)
        m.d.comb += [
            wfifo.w_en.eq(self.sp_b_resp.valid),
            wfifo.w_data.eq(Cat(*[self.sp_b_resp.payload[j] for j in range(C)], w_tag_q)),
            array.w_in.valid.eq(wfifo.r_rdy),
            array.w_in.payload.as_value().eq(wfifo.r_data[:8 * C]),
            wfifo.r_en.eq(array.w_in.ready),
        ]
        # A LOAD_W has completed once its tile's last row entered the array.
        w_fire = Signal()
        w_done_push = Signal(2)
        m.d.comb += [
            w_fire.eq(array.w_in.valid & array.w_in.ready),
            w_done_push.eq(Mux(w_fire, wfifo.r_data[8 * C:], 0)),
        ]

        # -- activation feeder -----------------------------------------------------------
        m.submodules.afifo = afifo = fifo.SyncFIFOBuffered(width=8 * R + 1 + 16 + 1 + 2,
                                                           depth=self.FEED_DEPTH)
        a_inflight = Signal(lat)
        a_tag = Signal(16 + 1 + 1 + 2)   # acc row, accumulate, last, pushes (for the FIFO)
        a_used = Signal.like(afifo.level)
        a_room = Signal()                # as `w_room`
        m.d.comb += a_used.eq(afifo.level + sum(a_inflight[i] for i in range(lat)))
        m.d.sync += a_room.eq(a_used < self.FEED_DEPTH - 1)
        a_issue = Signal()
        a_last = Signal()
        m.d.comb += [
            self.sp_a_req.valid.eq(a_busy & a_any & a_room),
            self.sp_a_req.payload.eq(a_addr),
            a_issue.eq(self.sp_a_req.valid & self.sp_a_req.ready),
            a_last.eq(a_one),
            a_tag.eq(Cat(a_acc, a_accumulate, a_last,
                         Mux(a_last, Cat(a_push_ld, a_push_st), 0))),
        ]
        m.d.sync += a_inflight.eq(Cat(a_issue, a_inflight[:-1]))
        a_tag_q = a_tag
        for i in range(lat):
            a_tag_d = Signal.like(a_tag, name=f"a_tag_d{i}")
            m.d.sync += a_tag_d.eq(a_tag_q)
            a_tag_q = a_tag_d
        with m.If(a_issue):
            m.d.sync += [a_addr.eq(a_addr + a_stride), a_left.eq(a_left - 1),
                         a_any.eq(~a_one), a_one.eq(a_left == 2),
                         a_acc.eq(a_acc + 1)]
            with m.If(a_last):
                m.d.sync += a_busy.eq(0)
        m.d.comb += a_finishing.eq(a_issue & a_last)
        # After the feeders' own updates, so a new instruction's registers win.
        with m.If(take):
            with m.If(~(is_lw | is_mm) | ~ok):
                m.d.sync += [error_valid.eq(1),
                             self.error.eq(Mux(is_lw | is_mm, ExecError.BAD_OPERAND,
                                               ExecError.BAD_OPCODE))]
            with m.Elif(is_lw):
                m.d.sync += [w_busy.eq(1), w_addr.eq(lw.sp_addr), w_stride.eq(lw.sp_stride),
                             w_left.eq(R), w_one.eq(R == 1),
                             w_push_ld.eq(push_ld), w_push_st.eq(push_st)]
            with m.Elif(u_lw):
                # A loop step's tile: contiguous rows, and only the step's MATMUL pushes.
                m.d.sync += [w_busy.eq(1), w_addr.eq(mm.w_addr + w_off), w_stride.eq(1),
                             w_left.eq(R), w_one.eq(R == 1),
                             w_push_ld.eq(0), w_push_st.eq(0)]
            with m.Else():
                m.d.sync += [a_busy.eq(1), a_addr.eq(mm.sp_addr + a_off),
                             a_stride.eq(mm.sp_stride), a_left.eq(mm.rows),
                             a_any.eq(flags.rows_any), a_one.eq(flags.rows_one),
                             a_acc.eq(mm.acc_addr), a_accumulate.eq(mm.accumulate | ~step_zero),
                             a_push_ld.eq(push_ld), a_push_st.eq(push_st)]
        m.d.comb += [
            afifo.w_en.eq(self.sp_a_resp.valid),
            afifo.w_data.eq(Cat(*[self.sp_a_resp.payload[i] for i in range(R)], a_tag_q)),
        ]
        # Pop a row into the array: its tag travels beside it for `latency` cycles.
        a_lanes = afifo.r_data[:8 * R]
        a_meta = afifo.r_data[8 * R:]
        m.d.comb += [
            array.a_in.valid.eq(afifo.r_rdy),
            array.a_in.payload.data.as_value().eq(a_lanes),
            array.a_in.payload.last.eq(a_meta[17]),
            afifo.r_en.eq(array.a_in.ready),
        ]
        a_fire = Signal()
        m.d.comb += a_fire.eq(array.a_in.valid & array.a_in.ready)
        tag = Cat(a_meta, a_fire)
        for i in range(cfg.latency):
            nxt = Signal.like(tag, name=f"tag_d{i}")
            m.d.sync += nxt.eq(tag)
            tag = nxt
        out_acc, out_accumulate = tag[:16], tag[16]
        out_push_ld, out_push_st, out_valid = tag[18], tag[19], tag[20]

        # -- accumulator write-back -----------------------------------------------------
        m.d.comb += [
            self.acc_w.valid.eq(array.y_out.valid),
            self.acc_w.payload.addr.eq(out_acc),
            self.acc_w.payload.accumulate.eq(out_accumulate),
            self.acc_w.payload.data.eq(array.y_out.payload.data),
        ]
        # A row is readable from the accumulator `Accumulator.WRITE_LATENCY` cycles after
        # its write was accepted (its read-modify-write); tokens and `busy` wait for that.
        committed = Cat(out_valid, out_push_ld, out_push_st)
        for i in range(Accumulator.WRITE_LATENCY):
            nxt = Signal.like(committed, name=f"commit_d{i}")
            m.d.sync += nxt.eq(committed)
            committed = nxt
        done_valid, done_push_ld, done_push_st = committed[0], committed[1], committed[2]
        # A MATMUL's completion and a LOAD_W's can push in the same cycle.
        m.d.comb += [
            self.ld_push.eq((done_valid & done_push_ld) + w_done_push[0]),
            self.st_push.eq((done_valid & done_push_st) + w_done_push[1]),
        ]

        # -- status and performance signals ---------------------------------------------
        # Rows between a_in and readability.
        in_array = Signal(range(cfg.latency + Accumulator.WRITE_LATENCY + 2))
        m.d.sync += in_array.eq(in_array + a_fire - done_valid)
        m.d.comb += [
            # Levels, not r_rdy: a buffered FIFO shows a new row on r_rdy a cycle late.
            self.busy.eq(w_busy | a_busy | w_inflight.any() | a_inflight.any()
                         | (afifo.level != 0)
                         | (wfifo.level != 0) | (in_array != 0) | ~first),
            self.array_busy.eq(a_fire),
            self.stall_weights.eq(array.a_in.valid & ~array.a_in.ready),
            self.stall_operand.eq(~array.a_in.valid & a_busy),
        ]
        return m
