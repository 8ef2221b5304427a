"""Command processor: fetches instructions from a DRAM ring and dispatches them to the queues.

The host writes instructions into a ring of ``IQ_SIZE`` 16-byte slots at ``IQ_BASE`` and
rings the doorbell by writing ``IQ_TAIL`` (one past the last instruction). The processor
fetches from ``IQ_HEAD`` up to the tail in bursts of up to :attr:`FETCH_MAX` instructions
through the DMA's read engine, and hands each instruction to its queue: load, execute or
store. FENCE waits until every queue is empty and every unit idle; END does the same, then
reports the program done. An undefined opcode, or any unit's error, stops fetching and
dispatching and reports the error with the index of the instruction concerned.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, Value, unsigned
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from llmchip.sw import isa, regs

from .dma_if import DmaError, dma_cmd_layout, dma_data_layout, dma_done_layout, error_code
from .pe import _rejected

__all__ = ["CommandProcessor"]


class CommandProcessor(wiring.Component):
    """Instruction fetch and dispatch.

    Parameters
    ----------
    bus_bytes : int
        Bytes per DMA data beat.
    addr_width : int
        DRAM address width.
    queue_depth : int
        Instructions buffered per queue.
    ex_terms, ld_terms, st_terms : callable, tuple of callables or pipeline, optional
        Side bits computed from each instruction of that queue as it is queued, and
        delivered above its 128 bits on ``ex_insn``, ``ld_insn`` or ``st_insn`` (the
        units' operand checks, one stage ahead of their use):

        * a callable ``f(word) -> Value``: combinational;
        * a tuple ``(f1, ..., fn)``: ``fn(...f2(f1(word)))`` with a register after each
          stage (latency ``n``);
        * a pipeline: an object with ``latency``, ``build(m, platform, word) -> Value``
          (its side bits ``latency`` cycles after ``word``, from registers it builds in
          ``m``) and ``__call__(word) -> Value`` (the same bits, combinational).

        An instruction whose side bits take ``n > 0`` cycles is dispatched at once and
        enters its queue ``n`` cycles later, through a delay line beside the pipeline;
        the dispatch reserves its queue slot. The delay costs latency: instructions still
        leave the buffer one per cycle while their queue has room (a slot comes back when
        the unit takes its instruction, so a unit taking one every cycle would see
        ``queue_depth`` of every ``n + 2`` cycles).

    Raises
    ------
    ValueError
        If ``queue_depth`` is below 3 (the delayed writes rely on a buffered queue with
        at least two entries behind its output register).
    """

    FETCH_MAX = 8  #: instructions fetched per DMA command at most

    def __init__(self, bus_bytes: int, addr_width: int = 32, queue_depth: int = 4, *,
                 ex_terms=None, ld_terms=None, st_terms=None):
        if isinstance(queue_depth, bool) or not isinstance(queue_depth, int) \
                or queue_depth < 3:
            raise _rejected(self, ValueError(
                f"queue_depth must be an int >= 3, not {queue_depth!r}"))
        self.bus_bytes, self.addr_width, self.queue_depth = bus_bytes, addr_width, queue_depth
        self.terms = {}
        ports = {}
        for name, f in (("ld", ld_terms), ("ex", ex_terms), ("st", st_terms)):
            stages = () if f is None else tuple(f) if isinstance(f, (tuple, list)) else f
            self.terms[name] = stages
            ports[name] = stream.Signature(unsigned(
                isa.INSN_BITS + len(self._side(stages, Signal(isa.INSN_BITS)))))
        super().__init__({
            "iq_base": In(32), "iq_size": In(32), "iq_tail": In(32),
            "doorbell": In(1),
            "iq_head": Out(32),
            "rd_cmd": Out(stream.Signature(dma_cmd_layout(addr_width))),
            "rd_data": In(stream.Signature(dma_data_layout(bus_bytes))),
            "rd_done": In(stream.Signature(dma_done_layout())),
            "ld_insn": Out(ports["ld"]), "ex_insn": Out(ports["ex"]),
            "st_insn": Out(ports["st"]),
            "ld_busy": In(1), "ex_busy": In(1), "st_busy": In(1),
            "ld_error": In(8), "ex_error": In(8), "st_error": In(8),
            "busy": Out(1), "done": Out(1),
            "error": Out(8), "error_info": Out(32),
            "irq_done": Out(1), "irq_error": Out(1),
        })

    @staticmethod
    def _latency(stages) -> int:
        """Cycles from an instruction to its side bits through ``stages``."""
        if hasattr(stages, "build"):
            return stages.latency
        return 0 if callable(stages) else len(stages)

    @staticmethod
    def _side(stages, word, m: Module | None = None, platform=None) -> Value:
        """The side bits of ``word`` through ``stages`` (a callable: combinational; a
        tuple: each stage registered in ``m``; a pipeline: built in ``m``). Without
        ``m``, the combinational equivalent (for widths)."""
        if hasattr(stages, "build") and m is not None:
            return Value.cast(stages.build(m, platform, word))
        if callable(stages):
            return Value.cast(stages(word))
        value = Cat()
        if stages:
            value = word
            for k, stage in enumerate(stages):
                out = Value.cast(stage(value))
                if m is not None:
                    reg = Signal(len(out), name=f"terms_s{k}")
                    m.d.sync += reg.eq(out)
                    out = reg
                value = out
        return value

    def elaborate(self, platform):
        m = Module()
        B = self.bus_bytes
        beats_per_insn = max(1, isa.INSN_BYTES // B)
        depth = self.FETCH_MAX

        running = Signal()
        error = Signal(8)
        stopped = Signal()
        # `stopped` is `error != 0`, kept as a register: every assignment of `error` sets
        # it too (it gates the fetch, the dispatch and the unit errors).
        m.d.comb += self.error.eq(error)

        # -- fetch ------------------------------------------------------------------------
        m.submodules.ibuf = ibuf = fifo.SyncFIFOBuffered(width=isa.INSN_BITS, depth=depth)
        head = Signal(32)
        m.d.comb += self.iq_head.eq(head)
        bad_queue = Signal()
        m.d.comb += bad_queue.eq((self.iq_size == 0) | (self.iq_tail >= self.iq_size))
        with m.If(self.doorbell):
            with m.If(bad_queue):
                m.d.sync += [error.eq(regs.ErrorCode.QUEUE_CONFIG), stopped.eq(1)]
            with m.Elif(~stopped):
                m.d.sync += [running.eq(1), self.done.eq(0)]

        fetching = Signal()        # a fetch command is on its way
        pending = Signal(range(depth + 1))   # fetched instructions not yet in the buffer
        avail = Signal(32)
        m.d.comb += avail.eq(Mux(self.iq_tail >= head, self.iq_tail - head,
                                 self.iq_size - head))   # up to the ring's end
        room = Signal(range(depth + 1))
        m.d.comb += room.eq(depth - ibuf.level - pending)
        # The fetch size comes from registers, in two stages (the ring arithmetic, then
        # its minimum with the buffer's room), so neither the ring's carry chains nor the
        # minimum's are in series with each other or with the read arbiter. The value is
        # never too large: the tail only advances, the head and `pending` change only
        # when a fetch is accepted (which clears both stages), and the buffer's room only
        # grows between two cycles.
        avail_q = Signal(32)
        count = Signal(range(depth + 1))
        m.d.sync += [avail_q.eq(avail), count.eq(Mux(avail_q < room, avail_q, room))]
        cmd = Signal(dma_cmd_layout(self.addr_width))
        m.d.comb += [
            cmd.addr.eq(self.iq_base + (head << 4)),
            cmd.rows.eq(count),
            cmd.row_bytes.eq(isa.INSN_BYTES),
            cmd.stride.eq(isa.INSN_BYTES),
            self.rd_cmd.payload.eq(cmd),
            self.rd_cmd.valid.eq(running & ~stopped & ~fetching & (count != 0)),
        ]
        with m.If(self.rd_cmd.valid & self.rd_cmd.ready):
            nxt = Signal(32)
            m.d.comb += nxt.eq(head + count)
            # Both stages restart from the new head: no size computed before this fetch
            # can reach the next one, however soon it completes.
            m.d.sync += [fetching.eq(1), pending.eq(count),
                         head.eq(Mux(nxt >= self.iq_size, 0, nxt)),
                         avail_q.eq(0), count.eq(0)]

        # Assemble 128-bit instructions from beats.
        word = Signal(isa.INSN_BITS)
        part = Signal(range(max(beats_per_insn, 2)))
        beat_bits = 8 * min(B, isa.INSN_BYTES)
        beat_data = self.rd_data.payload.data.as_value()[:beat_bits]
        full = Signal(isa.INSN_BITS)
        if beats_per_insn == 1:
            m.d.comb += full.eq(beat_data)
        else:
            m.d.comb += full.eq(word)
            for k in range(beats_per_insn):
                with m.If(part == k):
                    m.d.comb += full[k * beat_bits:(k + 1) * beat_bits].eq(beat_data)
        insn_end = Signal()
        m.d.comb += [
            insn_end.eq(part == beats_per_insn - 1),
            self.rd_data.ready.eq(1),   # room was reserved before fetching
            ibuf.w_data.eq(full),
            ibuf.w_en.eq(self.rd_data.valid & insn_end & ~stopped),
        ]
        with m.If(self.rd_data.valid):
            m.d.sync += word.eq(full)
            if beats_per_insn > 1:
                m.d.sync += part.eq(Mux(insn_end, 0, part + 1))
            with m.If(insn_end):
                m.d.sync += pending.eq(pending - 1)
        with m.If(self.rd_done.valid):
            m.d.comb += self.rd_done.ready.eq(1)
            m.d.sync += [fetching.eq(0), pending.eq(0)]
            with m.If(self.rd_done.payload.error != DmaError.OK):
                code = Signal(8)
                m.d.comb += code.eq(error_code(self.rd_done.payload.error))
                m.d.sync += [error.eq(code), stopped.eq(code != 0)]

        # -- dispatch ----------------------------------------------------------------------
        queues = {}
        for name, port in (("ld", self.ld_insn), ("ex", self.ex_insn), ("st", self.st_insn)):
            q = fifo.SyncFIFOBuffered(width=len(port.payload), depth=self.queue_depth)
            m.submodules[f"{name}_queue"] = q
            m.d.comb += [port.valid.eq(q.r_rdy), port.payload.eq(q.r_data),
                         q.r_en.eq(port.ready)]
            queues[name] = q
        index = Signal(32)     # program-order index of the instruction at the buffer head
        last_index = {n: Signal(32, name=f"{n}_last_index") for n in queues}
        op = ibuf.r_data[:4]
        target = Signal(2)     # 0 load, 1 execute, 2 store, 3 control
        legal = Signal()
        with m.Switch(op):
            for opcode, queue in isa.QUEUE.items():
                with m.Case(int(opcode)):
                    m.d.comb += [target.eq(int(queue)), legal.eq(1)]
            with m.Default():
                m.d.comb += [target.eq(isa.Queue.CONTROL), legal.eq(0)]
        drained_now = Signal()
        # Queue levels, not r_rdy: a buffered FIFO shows a new entry on r_rdy a cycle late.
        # A unit reporting an error is not drained: its last instruction failed in the same
        # cycle it went idle, and END must not report the program done.
        lines_empty = Signal()      # no instruction in a delay line (below)
        m.d.comb += drained_now.eq((queues["ld"].level == 0) & (queues["ex"].level == 0)
                                   & (queues["st"].level == 0) & lines_empty
                                   & ~self.ld_busy & ~self.ex_busy & ~self.st_busy
                                   & (self.ld_error == 0) & (self.ex_error == 0)
                                   & (self.st_error == 0))
        # FENCE and END wait for `drained`, a register: the units' state in the previous
        # cycle, in which nothing entered a queue. Nothing else starts work, so the units
        # are still drained (no unit starts, and none can fail, without an instruction),
        # and the handshake across the units is not in series with the dispatch.
        drained = Signal()
        queued = Signal()
        m.d.sync += drained.eq(drained_now & ~queued)
        # A queue whose side bits take n > 0 cycles is written n cycles after the dispatch,
        # from a delay line beside the side-bit pipeline (which runs on the buffer's head
        # every cycle). `free` counts its slots neither filled nor reserved by an
        # instruction in the delay line; a dispatch takes one, a unit's take returns one.
        # The queue then always has room when the delayed write comes: with at least
        # two entries behind its output register, its w_rdy is low only when it holds
        # `queue_depth` instructions.
        latency = {n: self._latency(st) for n, st in self.terms.items()}
        go = {n: Signal(name=f"{n}_go") for n in queues}
        room = {}
        in_flight = Cat()
        for name, q in queues.items():
            n = latency[name]
            side = self._side(self.terms[name], ibuf.r_data, m, platform)
            if n == 0:
                m.d.comb += [q.w_en.eq(go[name]), q.w_data.eq(Cat(ibuf.r_data, side))]
                room[name] = q.w_rdy
                continue
            free = Signal(range(self.queue_depth + 1), name=f"{name}_free",
                          init=self.queue_depth)
            taken = Signal(name=f"{name}_taken")
            m.d.comb += taken.eq(q.r_rdy & q.r_en)
            m.d.sync += free.eq(free - go[name] + taken)
            room[name] = free != 0
            words = [Signal(isa.INSN_BITS, name=f"{name}_delay{k}") for k in range(n)]
            valid = [Signal(name=f"{name}_delay{k}_valid") for k in range(n)]
            m.d.sync += [words[0].eq(ibuf.r_data), valid[0].eq(go[name])]
            m.d.sync += [words[k].eq(words[k - 1]) for k in range(1, n)]
            m.d.sync += [valid[k].eq(valid[k - 1]) for k in range(1, n)]
            m.d.comb += [q.w_en.eq(valid[-1]), q.w_data.eq(Cat(words[-1], side))]
            in_flight = Cat(in_flight, *valid)
        m.d.comb += lines_empty.eq(~in_flight.any())
        dispatch = Signal()
        with m.If(ibuf.r_rdy & running & ~stopped):
            with m.If(~legal):
                m.d.sync += [error.eq(regs.ErrorCode.ILLEGAL_OPCODE), stopped.eq(1),
                             self.error_info.eq(index)]
            with m.Elif(target == isa.Queue.CONTROL):
                with m.If(drained):
                    m.d.comb += dispatch.eq(1)
                    with m.If(op == isa.Opcode.END):
                        m.d.sync += [running.eq(0), self.done.eq(1)]
                        m.d.comb += self.irq_done.eq(1)
            with m.Else():
                for qi, name in enumerate(("ld", "ex", "st")):
                    with m.If((target == qi) & room[name]):
                        m.d.comb += [dispatch.eq(1), go[name].eq(1), queued.eq(1)]
                        m.d.sync += last_index[name].eq(index)
        m.d.comb += ibuf.r_en.eq(dispatch)
        with m.If(dispatch):
            m.d.sync += index.eq(index + 1)

        # -- unit errors stop the program ---------------------------------------------------
        for name, err in (("ld", self.ld_error), ("ex", self.ex_error), ("st", self.st_error)):
            with m.If((err != 0) & ~stopped):
                m.d.sync += [error.eq(err), stopped.eq(1),
                             self.error_info.eq(last_index[name])]
        newly = Signal()
        was = Signal()
        m.d.sync += was.eq(stopped)
        m.d.comb += [newly.eq(stopped & ~was), self.irq_error.eq(newly)]
        with m.If(newly):
            m.d.sync += running.eq(0)

        m.d.comb += self.busy.eq(running & ~stopped)
        # Silence unused-field lint for the wide beat when the bus is wider than a word.
        if 8 * B > beat_bits:
            _ = Cat(self.rd_data.payload.data.as_value()[beat_bits:])
        return m
