"""cocotb bench of :class:`llmchip.tb.session.RtlSession`: serves host requests until told to quit.

The design is :class:`llmchip.tb.dram.System`. DRAM is read and written directly in the
simulator's array (``dut.dram.storage.mem``), so no bus beat goes through Python; a run
rings the doorbell and then waits for ``irq`` (or a time limit) in one trigger, so no
Python runs while the program executes. Requests and replies are tuples over a
``multiprocessing.connection`` whose address and key come from the environment.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from multiprocessing.connection import Client

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, First, ReadWrite, RisingEdge, Timer
from cocotb.utils import get_sim_time
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

from llmchip.sw import regs
from llmchip.tb.dram import LOAD_FILE
from llmchip.tb.session import ENV_ADDRESS, ENV_KEY, ENV_SPEC

CLOCK_NS = 10
REG = {r.name: r.offset for r in regs.REGISTERS}
COUNTERS = [r.name[:-3] for r in regs.REGISTERS
            if r.name.startswith("PERF_") and r.name.endswith("_LO")]
_IDLE, _BUSY = 0b10, 0b01


class Backdoor:
    """Byte access to SimDram's word array through simulator handles.

    Word ``i`` holds bytes ``i * B .. i * B + B - 1``, byte 0 in bits 7:0 (the AXI lane
    order). Partial words at the ends of a range are read, merged and written back.
    """

    #: Writes of at least this many words go through the array's bulk loader.
    BULK_WORDS = 256

    def __init__(self, array, beat_bytes: int, storage=None):
        self.array, self.B, self.storage = array, beat_bytes, storage

    def _merged(self, addr: int, data: bytes) -> tuple[int, int, bytes]:
        """The whole words covering ``data`` at ``addr``: (first, last, bytes)."""
        B = self.B
        first, last = addr // B, (addr + len(data) - 1) // B
        head, tail = addr - first * B, (last + 1) * B - addr - len(data)
        if head or tail:
            lo = self._get(first).to_bytes(B, "little")[:head]
            hi = self._get(last).to_bytes(B, "little")[B - tail:]
            data = lo + data + hi
        return first, last, data

    def stage(self, addr: int, data: bytes) -> bool:
        """Prepare a bulk write: the words go to the load file and the loader is armed; the
        next clock edge stores them. Returns False (and does nothing) for short writes.

        Each word written through its own handle leaves a cached handle behind in cocotb
        (more than 1 KB each), which for a model's weights adds up to gigabytes.
        """
        if self.storage is None or len(data) < self.BULK_WORDS * self.B:
            return False
        first, last, data = self._merged(addr, data)
        words = np.frombuffer(data, dtype=np.uint8).reshape(-1, self.B)[:, ::-1]
        digits = np.frombuffer(words.tobytes().hex().encode(), dtype=np.uint8)
        lines = np.empty((len(words), 2 * self.B + 1), dtype=np.uint8)
        lines[:, :-1] = digits.reshape(len(words), 2 * self.B)
        lines[:, -1] = ord("\n")
        with open(LOAD_FILE, "wb") as f:
            f.write(lines.tobytes())
        self.storage.load_first.value = first
        self.storage.load_last.value = last
        self.storage.load.value = 1
        return True

    def _get(self, word: int) -> int:
        return int(self.array[word].value)

    def read(self, addr: int, nbytes: int) -> bytes:
        B = self.B
        first, last = addr // B, (addr + nbytes - 1) // B
        raw = b"".join(self._get(i).to_bytes(B, "little") for i in range(first, last + 1))
        return raw[addr - first * B:addr - first * B + nbytes]

    def write(self, addr: int, data: bytes) -> None:
        B = self.B
        first, last, data = self._merged(addr, data)
        for k, i in enumerate(range(first, last + 1)):
            self.array[i].value = int.from_bytes(data[k * B:(k + 1) * B], "little")


async def _snapshot(csr) -> dict:
    out = {}
    for name in ("STATUS", "ERROR_INFO", "IRQ_STATUS", "IQ_HEAD"):
        out[name] = await csr.read_dword(REG[name])
    for name in COUNTERS:
        lo = await csr.read_dword(REG[f"{name}_LO"])
        hi = await csr.read_dword(REG[f"{name}_HI"])
        out[name] = lo | (hi << 32)
    return out


async def _soft_reset(dut, csr) -> None:
    await csr.write_dword(REG["CTRL"], 0b010)
    for _ in range(1000):
        status = await csr.read_dword(REG["STATUS"])
        if status & _IDLE and not status & _BUSY and status >> 8 == 0:
            return
        await ClockCycles(dut.clk, 8)
    raise AssertionError(f"no STATUS.idle after soft reset (STATUS={status:#x})")


async def _run(dut, csr, job: dict):
    n, limit = job["n_insns"], job["limit_cycles"]
    await _soft_reset(dut, csr)
    base, size = job["window"]
    await csr.write_dword(REG["DRAM_BASE"], base)
    await csr.write_dword(REG["DRAM_SIZE"], size)
    await csr.write_dword(REG["IQ_BASE"], job["iq_base"])
    await csr.write_dword(REG["IQ_SIZE"], n + 1)
    await csr.write_dword(REG["IRQ_STATUS"], regs.IRQ_DONE | regs.IRQ_ERROR)
    await csr.write_dword(REG["IRQ_ENABLE"], regs.IRQ_DONE | regs.IRQ_ERROR)
    await csr.write_dword(REG["CTRL"], 0b100)   # clear the performance counters
    wall0, sim0 = time.perf_counter(), get_sim_time("ns")
    await csr.write_dword(REG["IQ_TAIL"], n)    # the doorbell
    if not int(dut.irq.value):
        await First(RisingEdge(dut.irq), Timer(limit * CLOCK_NS, "ns"))
    wall, cycles = time.perf_counter() - wall0, (get_sim_time("ns") - sim0) // CLOCK_NS
    fired = bool(int(dut.irq.value))
    out = await _snapshot(csr)
    out.update(cycles=int(cycles), wall_s=wall, error=out["STATUS"] >> 8 & 0xFF,
               done=bool(out["STATUS"] & 0b100), limit_cycles=limit)
    if not fired:
        return "timeout", out
    await csr.write_dword(REG["IRQ_STATUS"], regs.IRQ_DONE | regs.IRQ_ERROR)
    return "ok", out


@cocotb.test()
async def serve(dut):
    """Reset the design, then answer the host's requests until it says quit."""
    host, port = os.environ[ENV_ADDRESS].rsplit(":", 1)
    spec = json.loads(open(os.environ[ENV_SPEC]).read())
    conn = Client((host, int(port)), authkey=bytes.fromhex(os.environ[ENV_KEY]))
    dut.rst.value = 1
    if hasattr(dut, "sensor_valid"):
        # A DVFS configuration: a plausible, valid reading and no PROCHOT.
        dut.sensor_temp_mc.value = 45_000
        dut.sensor_valid.value = 1
        dut.prochot.value = 0
    csr = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "csr_"), dut.clk, dut.rst)
    # Let the bus models' initial values settle before the first clock edge.
    await Timer(1, "ns")
    # The clock toggles in the simulator's C layer, not in a Python task: while a program
    # runs, no Python executes until the interrupt.
    Clock(dut.clk, CLOCK_NS, unit="ns", impl="gpi").start(start_high=False)
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    dram = Backdoor(dut.dram.storage.mem, spec["bus_bytes"], dut.dram.storage)
    conn.send(("ok", {"sim_ns": get_sim_time("ns")}))
    with conn:
        while True:
            try:
                request = conn.recv()
            except (EOFError, OSError):
                dut._log.warning("host went away; ending the session")
                return
            op = request[0]
            if op == "quit":
                conn.send(("ok", None))
                return
            try:
                if op == "write":
                    # Writes made in the ReadWrite phase take effect at once.
                    await ReadWrite()
                    if dram.stage(request[1], request[2]):
                        await RisingEdge(dut.clk)          # the loader reads the file
                        await ReadWrite()
                        if int(dut.dram.storage.load.value):
                            raise RuntimeError("the DRAM bulk loader did not run")
                    else:
                        dram.write(request[1], request[2])
                    await RisingEdge(dut.clk)
                    reply = ("ok", None)
                elif op == "read":
                    reply = ("ok", dram.read(request[1], request[2]))
                elif op == "run":
                    reply = await _run(dut, csr, request[1])
                elif op == "csr_write":
                    await csr.write_dword(request[1], request[2])
                    reply = ("ok", None)
                elif op == "csr_read":
                    reply = ("ok", await csr.read_dword(request[1]))
                elif op == "sensor":
                    temp_mc, valid, prochot = request[1:4]
                    dut.sensor_temp_mc.value = temp_mc & ((1 << len(dut.sensor_temp_mc)) - 1)
                    dut.sensor_valid.value = int(valid)
                    dut.prochot.value = int(prochot)
                    await RisingEdge(dut.clk)
                    reply = ("ok", None)
                elif op == "advance":
                    await ClockCycles(dut.clk, request[1])
                    reply = ("ok", {"irq": int(dut.irq.value),
                                    "thermtrip": int(dut.thermtrip.value)
                                    if hasattr(dut, "thermtrip") else 0})
                else:
                    reply = ("error", f"unknown request {op!r}")
            except Exception:
                reply = ("error", traceback.format_exc())
            conn.send(reply)
