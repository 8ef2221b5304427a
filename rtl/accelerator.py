"""The accelerator: every block behind one AXI4 manager, one AXI4-Lite subordinate and an irq.

Blocks: CSRs (AXI4-Lite), command processor (instruction fetch and dispatch), DMA (AXI4),
load unit, execute unit (with the systolic array), store unit (with the post-processor),
scratchpad, accumulator, dependency-token counters and performance counters.

Soft reset (``CTRL.soft_reset``) aborts the DMA, takes its completions in place of the
units, waits until no bus transaction is outstanding, then resets every unit, the
dependency-token counters and the memories' request pipelines for one cycle; the memories'
contents and the CSRs other than the status are kept, so the host can start the next
program right away.
"""

from __future__ import annotations

from amaranth.hdl import Cat, EnableInserter, Module, Mux, ResetInserter, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from llmchip.config import AcceleratorConfig
from llmchip.sw import regs

from .accumulator import Accumulator
from .axi import axi4_signature, axi4lite_signature
from .clock_enable import AxiEnableBridge
from .cmdproc import CommandProcessor
from .csr import ADDR_WIDTH, CsrBlock
from .dma import AxiDma
from .dma_if import dma_cmd_layout, dma_data_layout, dma_done_layout
from .dvfs import DvfsController
from .execute import DispatchFlagsPipeline, ExecuteUnit
from .load import LoadUnit
from .pe import _rejected
from .scratchpad import Scratchpad
from .slice import AxiRegisterSlice, DataDoneSlices, RegisterSlice
from .store import StoreUnit

__all__ = ["Accelerator", "ReadArbiter", "csr_constants", "dvfs_params", "dvfs_signature",
           "DVFS_WINDOW"]

ADDR_BITS = 32

#: CSR byte offsets served by the DVFS controller.
DVFS_WINDOW = (regs.DVFS_BASE, regs.DVFS_BASE + 0x100)


def dvfs_params(cfg: AcceleratorConfig):
    """Return the :class:`~llmchip.sw.dvfs.DvfsParams` of ``cfg``'s DVFS controller.

    The accelerator starts under the ``performance`` governor with the stuck-sensor check
    off: the controller boots at the lowest operating point, reaches the top one after its
    first sample and one transition, and stays there until software picks a policy.
    """
    from llmchip.sw.dvfs import DvfsParams, Governor
    return DvfsParams(tick_cycles=cfg.dvfs_tick_cycles, governor=Governor.PERFORMANCE,
                      stuck_samples=0)


def dvfs_signature(cfg: AcceleratorConfig) -> wiring.Signature:
    """Return the signature of the accelerator's ``dvfs`` port (platform side of the
    controller: sensor, PROCHOT, voltage regulator, PLL), as the accelerator sees it."""
    from llmchip.sw.dvfs import TEMP_BITS
    iw = max(1, (len(dvfs_params(cfg).opps) - 1).bit_length())
    return wiring.Signature({
        "temp_mc": In(signed(TEMP_BITS)), "temp_valid": In(1), "prochot_i": In(1),
        "v_ack": In(1), "pll_lock": In(1),
        "v_req_mv": Out(12), "v_req_valid": Out(1), "f_index": Out(iw), "tick": Out(1),
        "prochot_o": Out(1), "thermtrip": Out(1),
    })


def csr_constants(cfg: AcceleratorConfig) -> dict[str, int]:
    """Values of the read-only configuration registers for ``cfg``."""
    major, minor, patch = regs.VERSION
    return {
        "ID": regs.ID_MAGIC,
        "VERSION": (major << 16) | (minor << 8) | patch,
        "CFG_ARRAY": (cfg.rows | (cfg.cols << 9) | (int(cfg.dataflow == "os") << 18)
                      | (int(cfg.dvfs) << 19)),
        "CFG_WIDTHS": cfg.in_width | (cfg.acc_width << 8) | (cfg.bus_bits << 16),
        "CFG_SP": cfg.sp_rows | (cfg.sp_banks << 20),
        "CFG_SP_ROW": cfg.sp_row_bytes,
        "CFG_ACC": cfg.acc_rows,
    }


class ReadArbiter(wiring.Component):
    """Share the DMA's read engine between instruction fetch and the load unit.

    Both clients may have commands in flight at once. A command goes to the DMA from
    instruction fetch when both ask (fetch has at most one command in flight and the
    instructions feed every unit, so the load unit waits at most one command; the fetch
    never starves the loads). The DMA answers in command order, so two queues of owners
    route the answers: one entry per accepted command in the completion queue, popped by
    its ``rd_done``; one per command with data in the data queue, popped by the command's
    ``last`` beat (data beats of the next command may flow before a completion is taken).

    Clients must not send commands without data (``rows`` or ``row_bytes`` of 0; the
    fetch and load units never do); after an abort the arbiter is reset with the DMA's
    clients.

    Parameters
    ----------
    bus_bytes : int
        Bytes per DMA data beat.
    addr_width : int
        DRAM address width.
    depth : int
        Entries per owner queue: at least the commands the DMA can hold
        (``DmaConfig.max_pending``). A full queue holds commands back.
    """

    def __init__(self, bus_bytes: int, addr_width: int, depth: int):
        self.depth = depth
        cmd = stream.Signature(dma_cmd_layout(addr_width))
        beat = stream.Signature(dma_data_layout(bus_bytes))
        done = stream.Signature(dma_done_layout())
        super().__init__({
            "fetch_cmd": In(cmd), "fetch_data": Out(beat), "fetch_done": Out(done),
            "load_cmd": In(cmd), "load_data": Out(beat), "load_done": Out(done),
            "rd_cmd": Out(cmd), "rd_data": In(beat), "rd_done": In(done),
        })

    def elaborate(self, platform):
        m = Module()
        # Owner 1 is the load unit, 0 instruction fetch.
        # Buffered queues: the owner at the head comes from a register, so routing a beat
        # does not start with a memory read. An owner is queued as its command is accepted,
        # many cycles before its first beat or completion, so the cycle the buffered queue
        # takes to show a new entry costs nothing; one entry more makes up for the one the
        # queue cannot take while it refills its output register.
        m.submodules.data_owners = data_q = SyncFIFOBuffered(width=1, depth=self.depth + 1)
        m.submodules.done_owners = done_q = SyncFIFOBuffered(width=1, depth=self.depth + 1)

        to_load = Signal()
        m.d.comb += [
            to_load.eq(~self.fetch_cmd.valid),
            self.rd_cmd.valid.eq((self.fetch_cmd.valid | self.load_cmd.valid)
                                 & data_q.w_rdy & done_q.w_rdy),
            self.rd_cmd.payload.eq(Mux(to_load, self.load_cmd.payload,
                                       self.fetch_cmd.payload)),
            self.fetch_cmd.ready.eq(self.rd_cmd.ready & data_q.w_rdy & done_q.w_rdy),
            self.load_cmd.ready.eq(self.fetch_cmd.ready & to_load),
            data_q.w_data.eq(to_load),
            done_q.w_data.eq(to_load),
            done_q.w_en.eq(self.rd_cmd.valid & self.rd_cmd.ready),
            data_q.w_en.eq(done_q.w_en & (self.rd_cmd.payload.rows != 0)
                           & (self.rd_cmd.payload.row_bytes != 0)),
        ]

        for q, src, dsts in ((data_q, self.rd_data, (self.fetch_data, self.load_data)),
                             (done_q, self.rd_done, (self.fetch_done, self.load_done))):
            for owner, dst in enumerate(dsts):
                mine = q.r_rdy & (q.r_data == owner)
                m.d.comb += [dst.valid.eq(src.valid & mine), dst.payload.eq(src.payload)]
                with m.If(mine):
                    m.d.comb += src.ready.eq(dst.ready)
        m.d.comb += [
            data_q.r_en.eq(self.rd_data.valid & self.rd_data.ready & self.rd_data.payload.last),
            done_q.r_en.eq(self.rd_done.valid & self.rd_done.ready),
        ]
        return m


class Accelerator(wiring.Component):
    """The accelerator for ``config`` (weight-stationary, int8 operands, int32 sums).

    Raises
    ------
    ValueError
        If the configuration is not one the accelerator supports, naming the field.
    """

    def __init__(self, config: AcceleratorConfig):
        if not isinstance(config, AcceleratorConfig):
            raise _rejected(self, TypeError(
                f"config must be an AcceleratorConfig, not {type(config).__name__}"))
        for name, want in (("dataflow", "ws"), ("in_width", 8), ("acc_width", 32)):
            if getattr(config, name) != want:
                raise _rejected(self, ValueError(
                    f"the accelerator needs {name} = {want!r}, not {getattr(config, name)!r} "
                    f"(the bare array supports other values)"))
        self.config = config
        members = {
            "bus": Out(axi4_signature(ADDR_BITS, config.bus_bits, 1)),
            "csr": Out(axi4lite_signature(ADDR_WIDTH, 32)),
            "irq": Out(1),
        }
        if config.dvfs:
            members["dvfs"] = Out(dvfs_signature(config))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        B = cfg.bus_bytes
        unit_rst = Signal()
        # Without the controller its registers are not built: accesses answer SLVERR.
        csr = CsrBlock(csr_constants(cfg), window=DVFS_WINDOW if cfg.dvfs else None,
                       absent=None if cfg.dvfs else DVFS_WINDOW)
        m.submodules.csr = csr
        wiring.connect(m, wiring.flipped(self.csr), csr.bus)
        m.d.comb += self.irq.eq(csr.irq)
        # The core (every unit, the memories, the dependency tokens) runs in the cycles
        # `en` is high; the CSRs, the DVFS controller, the counters of real time and the
        # bus bridge always run.
        en = Signal(init=1, name="core_en")
        if cfg.dvfs:
            dvfs = self._dvfs(m, csr)
            m.d.comb += en.eq(dvfs.clk_en)

        def unit(name, block):
            m.submodules[name] = EnableInserter(en)(ResetInserter(unit_rst)(block))
            return block

        dma = unit("dma", AxiDma(ADDR_BITS, cfg.bus_bits, 1,
                                 max_outstanding=cfg.dma_outstanding))
        m.submodules.bus_bridge = bridge = AxiEnableBridge(ADDR_BITS, cfg.bus_bits, 1)
        wiring.connect(m, dma.bus, bridge.core)
        m.d.comb += bridge.en.eq(en)
        # Every signal of the bus port comes from a register: the memory system's `ready`
        # and `valid` reach none of the DMA's logic in the same cycle.
        m.submodules.bus_slice = bus_slice = AxiRegisterSlice(ADDR_BITS, cfg.bus_bits, 1)
        wiring.connect(m, bridge.bus, bus_slice.manager)
        wiring.connect(m, wiring.flipped(self.bus), bus_slice.bus)
        lu = unit("load", LoadUnit(cfg, cfg.sp_rows, cfg.acc_rows, cfg.param_rows, B,
                                   ADDR_BITS, prechecked=True))
        eu = unit("execute", ExecuteUnit(cfg, cfg.sp_rows, cfg.acc_rows, prechecked=True))
        su = unit("store", StoreUnit(cfg, cfg.acc_rows, cfg.param_rows, B, ADDR_BITS,
                                     prechecked=True))
        # Each queue carries its instructions' operand checks, computed on the way into the
        # queue: for the execute unit, its dispatch flags (a six-stage pipeline: the
        # check's factors, the multipliers' operands, their products, a copy of them in
        # fabric registers, the range checks' sums, then their comparisons and the
        # decoding); for the load and
        # store units, the check itself in two stages (the last row's address, then its
        # comparison).
        cp = unit("cmdproc", CommandProcessor(
            B, ADDR_BITS, ex_terms=DispatchFlagsPipeline(cfg, cfg.sp_rows, cfg.acc_rows),
            ld_terms=lu.operand_stages(), st_terms=su.operand_stages()))
        # The memories' contents survive a soft reset, their pipelines do not: a read that
        # the execute or store unit issues as it is reset must not answer the reset unit.
        sp = unit("sp", Scratchpad(cfg.sp_row_bytes, cfg.sp_rows, cfg.sp_banks))
        acc = unit("acc", Accumulator(cfg.cols, cfg.acc_rows, cfg.acc_width))

        # Memories.
        wiring.connect(m, lu.sp_w, sp.w)
        wiring.connect(m, lu.acc_l, acc.l)
        wiring.connect(m, lu.param_w, su.param_w)
        wiring.connect(m, eu.sp_a_req, sp.a_req)
        wiring.connect(m, sp.a_resp, eu.sp_a_resp)
        wiring.connect(m, eu.sp_b_req, sp.b_req)
        wiring.connect(m, sp.b_resp, eu.sp_b_resp)
        wiring.connect(m, eu.acc_w, acc.w)
        wiring.connect(m, su.acc_req, acc.r_req)
        wiring.connect(m, acc.r_resp, su.acc_resp)

        # Instruction queues, each through a register slice: a unit's decision to take an
        # instruction does not reach into the command processor's queue in the same cycle.
        # An instruction in a slice counts as its unit's work for FENCE/END.
        held = {}
        for name, src, dst in (("ld", cp.ld_insn, lu.insn), ("ex", cp.ex_insn, eu.insn),
                               ("st", cp.st_insn, su.insn)):
            piece = unit(f"{name}_slice", RegisterSlice(dst.payload.shape()))
            wiring.connect(m, src, piece.i)
            wiring.connect(m, piece.o, dst)
            held[name] = piece.holding
        m.d.comb += [
            cp.ld_busy.eq(lu.busy | held["ld"]), cp.ex_busy.eq(eu.busy | held["ex"]),
            cp.st_busy.eq(su.busy | held["st"]),
            cp.ld_error.eq(Mux(lu.error_valid, lu.error, 0)),
            cp.ex_error.eq(Mux(eu.error_valid, Mux(eu.error == 1, regs.ErrorCode.ILLEGAL_OPCODE,
                                                   regs.ErrorCode.BAD_OPERAND), 0)),
            cp.st_error.eq(Mux(su.error_valid, su.error, 0)),
        ]

        # DMA: writes belong to the store unit; the read engine is shared by instruction
        # fetch and the load unit, whose commands may be in flight together.
        # The streams between the units and the DMA pass register slices, so that neither
        # side's handshake logic reaches into the other's in one cycle (the units and the
        # DMA are placed apart). A beat or command in a slice keeps the core from idle.
        slices = []

        def sliced(name, src, dst, *, connect=True, **kwargs):
            piece = unit(name, RegisterSlice(src.payload.shape(), **kwargs))
            if connect:
                wiring.connect(m, src, piece.i)
            wiring.connect(m, piece.o, dst)
            slices.append(piece.holding)
            return piece
        sliced("wr_cmd_slice", su.wr_cmd, dma.wr_cmd)
        sliced("wr_data_slice", su.wr_data, dma.wr_data)
        resetting = Signal()
        # During a soft reset the completions go to no client: an aborted command's client
        # may never take its completion (a STORE takes it only once all of its data went
        # out, which the aborting DMA no longer consumes), so the reset takes them itself,
        # and the DMA can become idle. The clients are reset right after.
        def completions(src, dst):
            m.d.comb += [dst.valid.eq(src.valid & ~resetting), dst.payload.eq(src.payload),
                         src.ready.eq(dst.ready | resetting)]
        wr_done = sliced("wr_done_slice", dma.wr_done, su.wr_done, connect=False)
        completions(dma.wr_done, wr_done.i)
        arb = unit("rd_arbiter", ReadArbiter(B, ADDR_BITS, dma.config.max_pending))
        # Read commands reach the arbiter through slices: its owner queues and the DMA's
        # command check see registers, not the fetch and load units' decisions.
        sliced("fetch_cmd_slice", cp.rd_cmd, arb.fetch_cmd)
        wiring.connect(m, arb.fetch_data, cp.rd_data)
        wiring.connect(m, arb.fetch_done, cp.rd_done)
        sliced("load_cmd_slice", lu.rd_cmd, arb.load_cmd)
        wiring.connect(m, arb.load_data, lu.rd_data)
        wiring.connect(m, arb.load_done, lu.rd_done)
        wiring.connect(m, arb.rd_cmd, dma.rd_cmd)
        # The DMA's read data and completions reach the arbiter through slices, the
        # completions behind their command's data: the DMA's `ready`s come from registers,
        # not through the arbiter's owner queues and a client's decision. (The load unit
        # takes beats through an input slice of its own; fetch always takes them.)
        rd_slices = unit("rd_slices", DataDoneSlices(dma.rd_data.payload.shape(),
                                                     dma.rd_done.payload.shape()))
        wiring.connect(m, dma.rd_data, rd_slices.data_i)
        completions(dma.rd_done, rd_slices.done_i)
        wiring.connect(m, rd_slices.data_o, arb.rd_data)
        wiring.connect(m, rd_slices.done_o, arb.rd_done)
        slices.append(rd_slices.holding)
        m.d.comb += [dma.window_base.eq(csr.dram_base),
                     dma.window_size.eq(csr.dram_size)]

        # Dependency tokens: load <-> execute <-> store. A soft reset clears them with the
        # units: tokens pushed by a stopped program must not release the next one's work.
        def tokens(name, push, pop):
            count = Signal(8, name=name)
            avail = Signal(name=f"{name}_avail")     # count != 0, as a register
            up, down, one = Signal(8), Signal(8), Signal()
            # The increment, the decrement and `count == 1` come from the register alone;
            # the push and the pop (units' decisions, late in the cycle) only select.
            m.d.comb += [up.eq(count + 1), down.eq(count - 1), one.eq(count == 1)]
            with m.If(en):
                with m.If(unit_rst):
                    m.d.sync += [count.eq(0), avail.eq(0)]
                with m.Elif(push & ~pop):
                    m.d.sync += [count.eq(up), avail.eq(1)]
                with m.Elif(pop & ~push):
                    m.d.sync += [count.eq(down), avail.eq(~one)]
            return avail

        m.d.comb += [
            eu.ld_avail.eq(tokens("tok_ld2ex", lu.ex_push, eu.ld_pop)),
            lu.ex_avail.eq(tokens("tok_ex2ld", eu.ld_push, lu.ex_pop)),
            su.ex_avail.eq(tokens("tok_ex2st", eu.st_push, su.ex_pop)),
            eu.st_avail.eq(tokens("tok_st2ex", su.ex_push, eu.st_pop)),
        ]

        # Control and status.
        # The CSRs' pulses wait for the core's next enabled cycle.
        doorbell = Signal()
        m.d.sync += doorbell.eq(csr.ctrl_start | csr.iq_tail_written | (doorbell & ~en))
        m.d.comb += [
            cp.iq_base.eq(csr.iq_base), cp.iq_size.eq(csr.iq_size), cp.iq_tail.eq(csr.iq_tail),
            # A write to IQ_TAIL is the doorbell; it takes effect once the value is stored.
            cp.doorbell.eq(doorbell),
            csr.iq_head.eq(cp.iq_head),
            csr.error_info.eq(cp.error_info),
            csr.irq_status_set.eq(Mux(en & cp.irq_done, regs.IRQ_DONE, 0)
                                  | Mux(en & cp.irq_error, regs.IRQ_ERROR, 0)
                                  | (Mux(dvfs.irq, regs.IRQ_DVFS, 0) if cfg.dvfs else 0)),
        ]
        all_idle = Signal()
        m.d.comb += all_idle.eq(~cp.busy & ~lu.busy & ~eu.busy & ~su.busy & dma.idle
                                & ~held["ld"] & ~held["ex"] & ~held["st"]
                                & ~Cat(*slices).any() & ~bus_slice.holding)
        m.d.comb += csr.status.eq(cp.busy | (cp.done << 2) | (all_idle << 1)
                                  | (cp.error << 8))
        with m.If(csr.ctrl_soft_reset):
            m.d.sync += resetting.eq(1)
        m.d.comb += dma.abort_req.eq(resetting)
        # The units reset in the enabled cycle after the bus was seen idle: from a register,
        # so neither the DMA's idle logic nor the enable's source lies on the reset net,
        # which reaches every flip-flop of the core. Nothing new reaches the DMA meanwhile
        # (its command streams are held while `resetting`).
        rst_next = Signal()
        with m.If(resetting & dma.idle & ~bus_slice.holding & en):
            m.d.sync += rst_next.eq(1)
        m.d.comb += unit_rst.eq(rst_next & en)
        with m.If(unit_rst):
            m.d.sync += [rst_next.eq(0), resetting.eq(0)]

        # Performance counters.
        clear = csr.ctrl_clear_counters
        macs_per_row = cfg.rows * cfg.cols

        def counter(port, inc):
            value = getattr(csr, port)
            with m.If(clear):
                m.d.sync += value.eq(0)
            with m.Else():
                m.d.sync += value.eq(value + inc)
        # Cycles and busy cycles are real time; the events happen only in enabled cycles.
        counter("perf_cycles", 1)
        counter("perf_busy", cp.busy)
        counter("perf_array_busy", en & eu.array_busy)
        counter("perf_stall_weights", en & eu.stall_weights)
        counter("perf_stall_operand", en & eu.stall_operand)
        counter("perf_stall_token", en & eu.stall_token)
        counter("perf_macs", Mux(en & eu.array_busy, macs_per_row, 0))
        # The DMA's byte counts are 32-bit and wrap; accumulate their increments in 64 bits
        # (both restart from zero on a soft reset).
        for port, count in (("perf_dma_rd_bytes", dma.bytes_read),
                            ("perf_dma_wr_bytes", dma.bytes_written)):
            prev = Signal(32, name=f"{port}_prev")
            delta = Signal(32, name=f"{port}_delta")
            m.d.comb += delta.eq(Mux(unit_rst, 0, count - prev))
            m.d.sync += prev.eq(Mux(unit_rst, 0, count))
            counter(port, delta)

        if cfg.dvfs:
            # Utilization windows for the governors: core cycles, and those in which the
            # array took a row or the DMA had work. Both restart at each control sample.
            width = len(dvfs.busy)
            busy_n, total_n = Signal(width, name="util_busy"), Signal(width, name="util_total")
            work = en & (eu.array_busy | ~dma.idle)
            m.d.comb += [dvfs.busy.eq(busy_n), dvfs.total.eq(total_n)]
            m.d.sync += [busy_n.eq(Mux(dvfs.sample, 0, busy_n) + work),
                         total_n.eq(Mux(dvfs.sample, 0, total_n) + en)]
        return m

    def _dvfs(self, m: Module, csr: CsrBlock) -> DvfsController:
        """Add the DVFS controller: CSR window, platform port; return it."""
        m.submodules.dvfs = dvfs = DvfsController(dvfs_params(self.config))
        port = self.dvfs
        m.d.comb += [
            dvfs.csr_addr.eq(csr.ext_addr), dvfs.csr_wdata.eq(csr.ext_wdata),
            dvfs.csr_we.eq(csr.ext_we), dvfs.csr_re.eq(csr.ext_re),
            csr.ext_rdata.eq(dvfs.csr_rdata),
            dvfs.temp_mc.eq(port.temp_mc), dvfs.temp_valid.eq(port.temp_valid),
            dvfs.prochot_i.eq(port.prochot_i), dvfs.v_ack.eq(port.v_ack),
            dvfs.pll_lock.eq(port.pll_lock),
            port.v_req_mv.eq(dvfs.v_req_mv), port.v_req_valid.eq(dvfs.v_req_valid),
            port.f_index.eq(dvfs.f_index), port.tick.eq(dvfs.tick),
            port.prochot_o.eq(dvfs.prochot_o), port.thermtrip.eq(dvfs.thermtrip),
        ]
        return dvfs
