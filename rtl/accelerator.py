"""The accelerator: every block behind one AXI4 manager, one AXI4-Lite subordinate and an irq.

Blocks: CSRs (AXI4-Lite), command processor (instruction fetch and dispatch), DMA (AXI4),
load unit, execute unit (with the systolic array), store unit (with the post-processor),
scratchpad, accumulator, dependency-token counters and performance counters.

Soft reset (``CTRL.soft_reset``) aborts the DMA, waits until no bus transaction is
outstanding, then resets every unit for one cycle; memories and the CSRs other than the
status keep their contents, so the host can start the next program right away.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from llmchip.config import AcceleratorConfig
from llmchip.sw import regs

from .accumulator import Accumulator
from .axi import axi4_signature, axi4lite_signature
from .cmdproc import CommandProcessor
from .csr import ADDR_WIDTH, CsrBlock
from .dma import AxiDma
from .execute import ExecuteUnit
from .load import LoadUnit
from .pe import _rejected
from .scratchpad import Scratchpad
from .store import StoreUnit

__all__ = ["Accelerator", "csr_constants"]

ADDR_BITS = 32


def csr_constants(cfg: AcceleratorConfig) -> dict[str, int]:
    """Values of the read-only configuration registers for ``cfg``."""
    major, minor, patch = regs.VERSION
    return {
        "ID": regs.ID_MAGIC,
        "VERSION": (major << 16) | (minor << 8) | patch,
        "CFG_ARRAY": cfg.rows | (cfg.cols << 9) | (int(cfg.dataflow == "os") << 18),
        "CFG_WIDTHS": cfg.in_width | (cfg.acc_width << 8) | (cfg.bus_bits << 16),
        "CFG_SP": cfg.sp_rows | (cfg.sp_banks << 20),
        "CFG_SP_ROW": cfg.sp_row_bytes,
        "CFG_ACC": cfg.acc_rows,
    }


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
        super().__init__({
            "bus": Out(axi4_signature(ADDR_BITS, config.bus_bits, 1)),
            "csr": Out(axi4lite_signature(ADDR_WIDTH, 32)),
            "irq": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        B = cfg.bus_bytes
        unit_rst = Signal()

        def unit(name, block):
            m.submodules[name] = ResetInserter(unit_rst)(block)
            return block

        csr = CsrBlock(csr_constants(cfg))
        m.submodules.csr = csr
        wiring.connect(m, wiring.flipped(self.csr), csr.bus)
        m.d.comb += self.irq.eq(csr.irq)

        dma = unit("dma", AxiDma(ADDR_BITS, cfg.bus_bits, 1))
        wiring.connect(m, wiring.flipped(self.bus), dma.bus)
        cp = unit("cmdproc", CommandProcessor(B, ADDR_BITS))
        lu = unit("load", LoadUnit(cfg, cfg.sp_rows, cfg.acc_rows, cfg.param_rows, B,
                                   ADDR_BITS))
        eu = unit("execute", ExecuteUnit(cfg, cfg.sp_rows, cfg.acc_rows))
        su = unit("store", StoreUnit(cfg, cfg.acc_rows, cfg.param_rows, B, ADDR_BITS))
        m.submodules.sp = sp = Scratchpad(cfg.sp_row_bytes, cfg.sp_rows, cfg.sp_banks)
        m.submodules.acc = acc = Accumulator(cfg.cols, cfg.acc_rows, cfg.acc_width)

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

        # Instruction queues.
        wiring.connect(m, cp.ld_insn, lu.insn)
        wiring.connect(m, cp.ex_insn, eu.insn)
        wiring.connect(m, cp.st_insn, su.insn)
        m.d.comb += [
            cp.ld_busy.eq(lu.busy), cp.ex_busy.eq(eu.busy), cp.st_busy.eq(su.busy),
            cp.ld_error.eq(Mux(lu.error_valid, lu.error, 0)),
            cp.ex_error.eq(Mux(eu.error_valid, Mux(eu.error == 1, regs.ErrorCode.ILLEGAL_OPCODE,
                                                   regs.ErrorCode.BAD_OPERAND), 0)),
            cp.st_error.eq(Mux(su.error_valid, su.error, 0)),
        ]

        # DMA: writes belong to the store unit; the read engine is shared by instruction
        # fetch and the load unit, one whole command at a time.
        wiring.connect(m, su.wr_cmd, dma.wr_cmd)
        wiring.connect(m, su.wr_data, dma.wr_data)
        wiring.connect(m, dma.wr_done, su.wr_done)
        owner = Signal(2)      # 0 free, 1 fetch, 2 load unit
        grant_cp = Signal()
        m.d.comb += grant_cp.eq(Mux(owner == 0, cp.rd_cmd.valid, owner == 1))
        def route(client):
            free = owner == 0
            m.d.comb += [dma.rd_cmd.payload.eq(client.rd_cmd.payload),
                         dma.rd_cmd.valid.eq(client.rd_cmd.valid & free),
                         client.rd_cmd.ready.eq(dma.rd_cmd.ready & free),
                         client.rd_data.valid.eq(dma.rd_data.valid),
                         client.rd_data.payload.eq(dma.rd_data.payload),
                         dma.rd_data.ready.eq(client.rd_data.ready),
                         client.rd_done.valid.eq(dma.rd_done.valid),
                         client.rd_done.payload.eq(dma.rd_done.payload),
                         dma.rd_done.ready.eq(client.rd_done.ready)]

        with m.If(grant_cp):
            route(cp)
        with m.Else():
            route(lu)
        with m.If(dma.rd_cmd.valid & dma.rd_cmd.ready):
            m.d.sync += owner.eq(Mux(grant_cp, 1, 2))
        with m.If(dma.rd_done.valid & dma.rd_done.ready):
            m.d.sync += owner.eq(0)
        m.d.comb += [dma.window_base.eq(csr.dram_base),
                     dma.window_size.eq(csr.dram_size)]

        # Dependency tokens: load <-> execute <-> store.
        def tokens(name, push, pop):
            count = Signal(8, name=name)
            m.d.sync += count.eq(count + push - pop)
            return count != 0

        m.d.comb += [
            eu.ld_avail.eq(tokens("tok_ld2ex", lu.ex_push, eu.ld_pop)),
            lu.ex_avail.eq(tokens("tok_ex2ld", eu.ld_push, lu.ex_pop)),
            su.ex_avail.eq(tokens("tok_ex2st", eu.st_push, su.ex_pop)),
            eu.st_avail.eq(tokens("tok_st2ex", su.ex_push, eu.st_pop)),
        ]

        # Control and status.
        doorbell = Signal()
        m.d.sync += doorbell.eq(csr.ctrl_start | csr.iq_tail_written)
        m.d.comb += [
            cp.iq_base.eq(csr.iq_base), cp.iq_size.eq(csr.iq_size), cp.iq_tail.eq(csr.iq_tail),
            # A write to IQ_TAIL is the doorbell; it takes effect once the value is stored.
            cp.doorbell.eq(doorbell),
            csr.iq_head.eq(cp.iq_head),
            csr.error_info.eq(cp.error_info),
            csr.irq_status_set.eq(Mux(cp.irq_done, regs.IRQ_DONE, 0)
                                  | Mux(cp.irq_error, regs.IRQ_ERROR, 0)),
        ]
        resetting = Signal()
        all_idle = Signal()
        m.d.comb += all_idle.eq(~cp.busy & ~lu.busy & ~eu.busy & ~su.busy & dma.idle)
        m.d.comb += csr.status.eq(cp.busy | (cp.done << 2) | (all_idle << 1)
                                  | (cp.error << 8))
        with m.If(csr.ctrl_soft_reset):
            m.d.sync += resetting.eq(1)
        m.d.comb += dma.abort_req.eq(resetting)
        with m.If(resetting & dma.idle):
            m.d.comb += unit_rst.eq(1)
            m.d.sync += resetting.eq(0)

        # Performance counters.
        clear = csr.ctrl_clear_counters
        macs_per_row = cfg.rows * cfg.cols

        def counter(port, inc):
            value = getattr(csr, port)
            with m.If(clear):
                m.d.sync += value.eq(0)
            with m.Else():
                m.d.sync += value.eq(value + inc)
        counter("perf_cycles", 1)
        counter("perf_busy", cp.busy)
        counter("perf_array_busy", eu.array_busy)
        counter("perf_stall_weights", eu.stall_weights)
        counter("perf_stall_operand", eu.stall_operand)
        counter("perf_stall_token", eu.stall_token)
        counter("perf_macs", Mux(eu.array_busy, macs_per_row, 0))
        # The DMA's byte counts are 32-bit and wrap; accumulate their increments in 64 bits
        # (both restart from zero on a soft reset).
        for port, count in (("perf_dma_rd_bytes", dma.bytes_read),
                            ("perf_dma_wr_bytes", dma.bytes_written)):
            prev = Signal(32, name=f"{port}_prev")
            delta = Signal(32, name=f"{port}_delta")
            m.d.comb += delta.eq(Mux(unit_rst, 0, count - prev))
            m.d.sync += prev.eq(Mux(unit_rst, 0, count))
            counter(port, delta)
        return m
