"""cocotb testbench for the whole accelerator: AxiRam as DRAM, AxiLiteMaster on the CSRs.

The job (JSON in ``LLMCHIP_STIM``) gives the DRAM image, the instruction ring, random
back-pressure settings, optional error regions, and a list of *phases*: each phase may
clear the error regions and set the DMA window, then rings the doorbell for a number of
instructions (``run``: waits for the interrupt) or rings it and pulses soft reset after
some cycles (``soft_reset``: waits for STATUS.idle). After every phase the testbench records STATUS,
ERROR_INFO, IRQ_STATUS, the performance counters and the requested DRAM regions; the
Python side compares them with the golden model.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam

from llmchip.sw import regs


class FaultyRam(AxiRam):
    """AxiRam whose accesses inside ``error_regions`` fail.

    cocotbext-axi turns an exception from the memory into a SLVERR response. For DECERR
    regions the channel's response is rewritten on its way out: the read and write
    handlers set ``_decerr`` before raising, and the wrapped send changes SLVERR to DECERR.
    """

    def __init__(self, *args, error_regions=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.error_regions = [(a, a + n, kind) for a, n, kind in error_regions]
        self._decerr = False
        for channel in (self.read_if.r_channel, self.write_if.b_channel):
            send = channel.send

            async def patched(tr, _send=send):
                if self._decerr and getattr(tr, "rresp", getattr(tr, "bresp", 0)) == 2:
                    if hasattr(tr, "rresp"):
                        tr.rresp = 3
                    else:
                        tr.bresp = 3
                self._decerr = False
                await _send(tr)
            channel.send = patched

        # The bus-facing handlers live on the read and write interfaces, not on AxiRam.
        read, write = self.read_if._read, self.write_if._write

        async def checked_read(address, length):
            self._check(address, length)
            return await read(address, length)

        async def checked_write(address, data):
            self._check(address, len(data))
            return await write(address, data)

        self.read_if._read, self.write_if._write = checked_read, checked_write

    def _check(self, address, length):
        for lo, hi, kind in self.error_regions:
            if address < hi and address + length > lo:
                self._decerr = kind == "decerr"
                raise OSError(f"{kind} at {address:#x}")


def _pause(rng: random.Random, prob: float):
    while True:
        yield rng.random() < prob


async def _wait(dut, csr, what: str, limit: int) -> int:
    """Wait for the irq line (``what == "irq"``) or for STATUS.idle; return the cycles."""
    for cycle in range(limit):
        await RisingEdge(dut.clk)
        if what == "irq" and int(dut.irq.value):
            return cycle
        if what == "idle" and cycle % 16 == 15:
            status = await csr.read_dword(regs.by_name("STATUS").offset)
            if status & 0b10:
                return cycle
    state = {name: hex(await csr.read_dword(regs.by_name(name).offset))
             for name in ("STATUS", "IQ_HEAD", "ERROR_INFO", "PERF_ARRAY_BUSY_LO",
                          "PERF_DMA_RD_BYTES_LO", "PERF_DMA_WR_BYTES_LO")}
    raise AssertionError(f"no {what} within {limit} cycles; {state}")


async def _snapshot(csr, ram, regions):
    out = {}
    for name in ("STATUS", "ERROR_INFO", "IRQ_STATUS", "IQ_HEAD", "ID", "VERSION",
                 "CFG_ARRAY", "CFG_WIDTHS", "CFG_SP", "CFG_SP_ROW", "CFG_ACC"):
        out[name] = await csr.read_dword(regs.by_name(name).offset)
    for r in regs.REGISTERS:
        if r.name.startswith("PERF_") and r.name.endswith("_LO"):
            lo = await csr.read_dword(r.offset)
            hi = await csr.read_dword(r.offset + 4)
            out[r.name[:-3]] = lo | (hi << 32)
    out["regions"] = {str(a): ram.read(a, n).hex() for a, n in regions}
    return out


@cocotb.test()
async def run_program(dut):
    """Run the job's phases and record what the host would see."""
    job = json.loads(open(os.environ["LLMCHIP_STIM"]).read())
    seed = job["seed"]
    dut._log.info("seed=%d (replay: LLMCHIP_SEED=%d)", seed, seed)
    rng = random.Random(seed)
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    ram = FaultyRam(AxiBus.from_prefix(dut, "bus_"), dut.clk, dut.rst, size=job["dram_size"],
                    error_regions=job.get("error_regions", []))
    csr = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "csr_"), dut.clk, dut.rst)
    pause = job.get("pause", 0.0)
    if pause:
        # Random stalls on every channel of both buses: DRAM responses and the CSR master.
        for ch in (ram.write_if.aw_channel, ram.write_if.w_channel, ram.write_if.b_channel,
                   ram.read_if.ar_channel, ram.read_if.r_channel,
                   csr.write_if.aw_channel, csr.write_if.w_channel, csr.write_if.b_channel,
                   csr.read_if.ar_channel, csr.read_if.r_channel):
            ch.set_pause_generator(_pause(random.Random(rng.random()), pause))
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    for addr, data in job["image"]:
        ram.write(int(addr), bytes.fromhex(data))

    reg = {r.name: r.offset for r in regs.REGISTERS}
    await csr.write_dword(reg["DRAM_BASE"], job["dram_base"])
    await csr.write_dword(reg["DRAM_SIZE"], job["dram_window"])
    await csr.write_dword(reg["IQ_BASE"], job["iq_base"])
    await csr.write_dword(reg["IQ_SIZE"], job["iq_size"])
    await csr.write_dword(reg["IRQ_ENABLE"], regs.IRQ_DONE | regs.IRQ_ERROR)
    await csr.write_dword(reg["CTRL"], 0b100)   # clear the performance counters

    results = []
    for phase in job["phases"]:
        kind = phase["kind"]
        if phase.get("clear_errors"):
            ram.error_regions = []
        if "window" in phase:
            await csr.write_dword(reg["DRAM_BASE"], phase["window"][0])
            await csr.write_dword(reg["DRAM_SIZE"], phase["window"][1])
        if kind == "run":
            for addr, data in phase.get("image", []):
                ram.write(int(addr), bytes.fromhex(data))
            await csr.write_dword(reg["CTRL"], 0b100)
            await csr.write_dword(reg["IQ_TAIL"], phase["tail"])
            cycles = await _wait(dut, csr, "irq", phase["limit"])
        elif kind == "soft_reset":
            await csr.write_dword(reg["IQ_TAIL"], phase["tail"])
            await ClockCycles(dut.clk, phase["after"])
            await csr.write_dword(reg["CTRL"], 0b010)
            cycles = await _wait(dut, csr, "idle", phase["limit"])
        else:
            raise AssertionError(f"unknown phase {kind!r}")
        snap = await _snapshot(csr, ram, phase.get("read", []))
        snap["cycles_to_event"] = cycles
        snap["irq_line"] = int(dut.irq.value)
        results.append(snap)
        # Acknowledge interrupts for the next phase.
        await csr.write_dword(reg["IRQ_STATUS"], regs.IRQ_DONE | regs.IRQ_ERROR)
    with open(os.environ["LLMCHIP_RESULT"], "w") as f:
        json.dump({"phases": results, "seed": seed}, f)
