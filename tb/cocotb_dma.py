"""cocotb testbench for the generated AxiDma (Icarus and Verilator), with AxiRam as DRAM.

Reads the DMA's parameters from the ``params.json`` sidecar (``LLMCHIP_PARAMS``) and
checks the port widths against them, and its job from ``LLMCHIP_STIM``: 2D read and write
commands, address regions that answer SLVERR or DECERR, and back-pressure probabilities.
cocotbext-axi's AxiRam plays DRAM (with random pauses on all five AXI channels), its
stream models drive and take the DMA's command and data streams (with random pauses too),
and AXI monitors record every burst. Read beats, completions and the final DRAM contents
are checked byte for byte against :mod:`llmchip.tb.dma_build`'s golden model. Optionally a
long read and a long write run with no back-pressure to measure throughput. The result
goes to the JSON file named by ``LLMCHIP_RESULT``. Launched by :mod:`llmchip.tb.dma_build`.
"""

from __future__ import annotations

import json
import os
import random
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiBus, AxiRam, AxiResp
from cocotbext.axi.axi_channels import AxiARBus, AxiARMonitor, AxiAWBus, AxiAWMonitor
from cocotbext.axi.axi_ram import AxiRamRead, AxiRamWrite
from cocotbext.axi.memory import Memory
from cocotbext.axi.stream import define_stream

from llmchip.rtl.dma import DmaError
from llmchip.tb.dma_build import (
    apply_write,
    command_code,
    expected_read,
    region_code,
    row_beats,
)

# Amaranth streams (payload/valid/ready) driven and taken by cocotbext-axi's generic models.
StreamBus, StreamTransaction, StreamSource, StreamSink, _ = define_stream(
    "DmaStream", signals=["payload", "valid", "ready"])


class _DramError(Exception):
    """An access to a faulty region of the DRAM model."""


# Error injection. AxiSlaveRead/AxiSlaveWrite turn any exception raised by the memory
# into SLVERR, so SLVERR only needs the memory's read/write to raise. They have no way to
# answer DECERR; but each beat's response object is handed to `r_channel.send` (reads) or
# the burst's to `b_channel.send` (writes) by the same coroutine that just called the
# failing read/write, so the memory notes that the failure was a decode error and a
# wrapper around that `send` rewrites the response code before it reaches the bus.

class _FaultyRead(AxiRamRead):
    def __init__(self, *args, regions, **kwargs):
        super().__init__(*args, **kwargs)
        self._regions = regions
        self._decerr = False
        send = self.r_channel.send

        async def send_decerr(r):
            if self._decerr:
                r.rresp = AxiResp.DECERR
                self._decerr = False
            await send(r)

        self.r_channel.send = send_decerr

    def read(self, address, length):
        code = region_code(self._regions, address, address + length)
        if code:
            self._decerr = code == DmaError.DECERR
            raise _DramError(f"read of {length} bytes at {address:#x}")
        return super().read(address, length)


class _FaultyWrite(AxiRamWrite):
    def __init__(self, *args, regions, **kwargs):
        super().__init__(*args, **kwargs)
        self._regions = regions
        self._decerr = False
        send = self.b_channel.send

        async def send_decerr(b):
            if self._decerr:
                b.bresp = AxiResp.DECERR
                self._decerr = False
            await send(b)

        self.b_channel.send = send_decerr

    def write(self, address, data):
        code = region_code(self._regions, address, address + len(data))
        if code:
            self._decerr |= code == DmaError.DECERR
            raise _DramError(f"write of {len(data)} bytes at {address:#x}")
        super().write(address, data)


class FaultyAxiRam(AxiRam):
    """AxiRam whose ``((lo, hi), DmaError)`` regions answer SLVERR or DECERR."""

    def __init__(self, bus, clock, reset, *, size, regions):
        # AxiRam.__init__ would build the plain read/write interfaces; build faulty ones.
        Memory.__init__(self, size)
        self.write_if = _FaultyWrite(bus.write, clock, reset, mem=self.mem, regions=regions)
        self.read_if = _FaultyRead(bus.read, clock, reset, mem=self.mem, regions=regions)

    @property
    def channels(self):
        """The five AXI channel models (for pause generators)."""
        w, r = self.write_if, self.read_if
        return [w.aw_channel, w.w_channel, w.b_channel, r.ar_channel, r.r_channel]


def _pauses(rng: random.Random, p: float):
    while True:
        yield rng.random() < p


class _Probe:
    """Record the cycles in which handshakes happen on a few valid/ready pairs."""

    def __init__(self, dut, pairs: dict):
        self.cycles = {name: [] for name in pairs}
        self.cycle = 0
        self._pairs = pairs
        self._task = cocotb.start_soon(self._run(dut))

    async def _run(self, dut):
        while True:
            await RisingEdge(dut.clk)
            self.cycle += 1
            for name, (valid, ready) in self._pairs.items():
                if int(valid.value) and int(ready.value):
                    self.cycles[name].append(self.cycle)

    def stop(self):
        self._task.cancel()


def _pack_cmd(cmd, addr_width: int) -> int:
    addr, rows, row_bytes, stride = cmd
    return (addr | rows << addr_width | row_bytes << (addr_width + 16)
            | stride << (addr_width + 32))


class _Dma:
    """The DMA's streams, wrapped in cocotbext-axi stream models."""

    def __init__(self, dut, addr_width: int, beat_bytes: int):
        def bus(name):
            return StreamBus.from_prefix(dut, f"{name}_")

        clk, rst = dut.clk, dut.rst
        self.dut, self.A, self.B = dut, addr_width, beat_bytes
        self.rd_cmd = StreamSource(bus("rd_cmd"), clk, rst)
        self.wr_cmd = StreamSource(bus("wr_cmd"), clk, rst)
        self.wr_data = StreamSource(bus("wr_data"), clk, rst)
        self.rd_data = StreamSink(bus("rd_data"), clk, rst)
        self.rd_done = StreamSink(bus("rd_done"), clk, rst)
        self.wr_done = StreamSink(bus("wr_done"), clk, rst)
        self.streams = [self.rd_cmd, self.wr_cmd, self.wr_data, self.rd_data, self.rd_done,
                        self.wr_done]

    def read(self, cmd):
        self.rd_cmd.send_nowait(StreamTransaction(payload=_pack_cmd(cmd, self.A)))

    def write(self, cmd, rows, rng: random.Random):
        self.wr_cmd.send_nowait(StreamTransaction(payload=_pack_cmd(cmd, self.A)))
        B = self.B
        for row in rows:
            for j in range(0, len(row), B):
                chunk = row[j:j + B]
                # Lanes past the row carry garbage: the strobes must keep it out of DRAM.
                chunk += rng.randbytes(B - len(chunk))
                self.wr_data.send_nowait(StreamTransaction(
                    payload=int.from_bytes(chunk, "little")))

    def take_reads(self):
        mask = (1 << (8 * self.B)) - 1
        out = []
        while not self.rd_data.empty():
            p = int(self.rd_data.recv_nowait().payload)
            out.append(((p & mask).to_bytes(self.B, "little"), p >> (8 * self.B)))
        return out

    @staticmethod
    def take_dones(sink):
        out = []
        while not sink.empty():
            out.append(int(sink.recv_nowait().payload))
        return out


async def _wait(dut, cycles: int, done, what: str) -> int:
    """Wait until ``done()``, at most ``cycles`` cycles; return the cycles waited."""
    for n in range(cycles):
        await RisingEdge(dut.clk)
        if done():
            return n + 1
    raise AssertionError(f"timeout after {cycles} cycles waiting for {what}")


@cocotb.test()
async def dma_transfers(dut):
    """Random 2D reads and writes against AxiRam, checked byte for byte."""
    job = json.loads(open(os.environ["LLMCHIP_STIM"]).read())
    params = json.loads(open(os.environ["LLMCHIP_PARAMS"]).read())
    cfg = params["config"]
    A, D = cfg["addr_width"], cfg["data_width"]
    B = params["derived"]["beat_bytes"]
    for port, bits in (("bus__awaddr", A), ("bus__wdata", D), ("bus__wstrb", B),
                       ("bus__arid", cfg["id_width"]), ("rd_cmd__payload", 2 * A + 32),
                       ("rd_data__payload", D + 1), ("wr_data__payload", D),
                       ("window_size", A + 1)):
        got = len(getattr(dut, port).value)
        assert got == bits, f"{port} is {got} bits wide, params.json says {bits}"
    seed = job["seed"]
    dut._log.info("DMA %s, seed=%d (replay: LLMCHIP_SEED=%d)", cfg, seed, seed)
    rng = random.Random(seed)
    regions = ([(tuple(r), DmaError.SLVERR) for r in job["slverr"]]
               + [(tuple(r), DmaError.DECERR) for r in job["decerr"]])
    window = tuple(job["window"])
    mem_base, mem_size = job["mem"]

    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    dut.abort_req.value = 0
    dut.window_base.value = window[0]
    dut.window_size.value = window[1]
    ram = FaultyAxiRam(AxiBus.from_prefix(dut, "bus_"), dut.clk, dut.rst, size=2 ** A,
                       regions=regions)
    ram.write(mem_base, rng.randbytes(mem_size))
    before = ram.read(mem_base, mem_size)
    ar_mon = AxiARMonitor(AxiARBus.from_prefix(dut, "bus_"), dut.clk, dut.rst)
    aw_mon = AxiAWMonitor(AxiAWBus.from_prefix(dut, "bus_"), dut.clk, dut.rst)
    dma = _Dma(dut, A, B)
    for ch in ram.channels:
        ch.set_pause_generator(_pauses(random.Random(rng.random()), job["bus_pause"]))
    for s in dma.streams:
        s.set_pause_generator(_pauses(random.Random(rng.random()), job["stream_pause"]))
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await RisingEdge(dut.clk)

    # Commands, and what they should do.
    t0 = time.perf_counter()
    expect = bytearray(before)
    want_beats, want_rd, want_wr = [], [], []
    for cmd in job["reads"]:
        dma.read(cmd)
        code = command_code(cmd, window, A)
        if code == DmaError.OUT_OF_WINDOW:
            want_beats += [bytes(B)] * (cmd[1] * row_beats(cmd[2], B))
        elif code is None:
            beats, code = expected_read(before, cmd, B, regions, base=mem_base)
            want_beats += beats
        want_rd.append(code)
    for cmd in job["writes"]:
        rows = [rng.randbytes(cmd[2]) for _ in range(cmd[1])]
        code = command_code(cmd, window, A)
        # Out-of-window commands still send their wr_data (the DMA drops it).
        dma.write(cmd, rows, rng)
        if code is None:
            code = apply_write(expect, cmd, rows, B, regions, base=mem_base)
        want_wr.append(code)

    def finished():
        return (dma.rd_data.count() >= len(want_beats) and dma.rd_done.count() >= len(want_rd)
                and dma.wr_done.count() >= len(want_wr))

    cycles = await _wait(dut, job["max_cycles"], finished, "all completions")
    await ClockCycles(dut.clk, 32)   # long enough to catch spurious extra beats
    assert int(dut.idle.value), "not idle after every command completed"

    got_beats = dma.take_reads()
    assert len(got_beats) == len(want_beats), \
        f"{len(got_beats)} rd_data beats, expected {len(want_beats)}"
    k = 0
    for n, cmd in enumerate(job["reads"]):
        code = want_rd[n]
        count = 0 if code == DmaError.BAD_COMMAND else cmd[1] * row_beats(cmd[2], B)
        for j in range(count):
            data, last = got_beats[k]
            assert data == want_beats[k], (f"read {n} {cmd} beat {j}: got {data.hex()}, "
                                           f"want {want_beats[k].hex()}")
            assert last == (j == count - 1), f"read {n} {cmd} beat {j}: last={last}"
            k += 1
    rd_dones, wr_dones = dma.take_dones(dma.rd_done), dma.take_dones(dma.wr_done)
    assert rd_dones == want_rd, f"read completions {rd_dones}, expected {want_rd}"
    assert wr_dones == want_wr, f"write completions {wr_dones}, expected {want_wr}"
    after = ram.read(mem_base, mem_size)
    if after != bytes(expect):
        bad = next(i for i in range(mem_size) if after[i] != expect[i])
        raise AssertionError(f"DRAM differs first at {mem_base + bad:#x}: "
                             f"{after[bad]:#04x}, expected {expect[bad]:#04x}")

    bursts = {"ar": [], "aw": []}
    for name, mon in (("ar", ar_mon), ("aw", aw_mon)):
        while not mon.empty():
            t = mon.recv_nowait()
            addr = int(getattr(t, f"{name}addr"))
            beats = int(getattr(t, f"{name}len")) + 1
            assert int(getattr(t, f"{name}size")) == params["derived"]["size_log2"]
            assert beats <= cfg["max_burst"], f"{name.upper()} burst of {beats} beats"
            assert addr // 4096 == (addr + beats * B - 1) // 4096, \
                f"{name.upper()} {addr:#x}+{beats * B} crosses 4 KB"
            assert window[0] <= addr and addr + beats * B <= window[0] + window[1]
            bursts[name].append(beats)
    wall = time.perf_counter() - t0

    throughput = {}
    if job.get("throughput_beats"):
        regions.clear()   # the interfaces share this list: no faults while timing
        throughput = await _measure(dut, dma, ram, job["throughput_beats"], mem_base, B, rng)

    result = {"seed": seed, "rd_dones": rd_dones, "wr_dones": wr_dones,
              "rd_beats": len(got_beats), "ar_bursts": len(bursts["ar"]),
              "aw_bursts": len(bursts["aw"]), "max_ar_beats": max(bursts["ar"], default=0),
              "max_aw_beats": max(bursts["aw"], default=0), "wall_s": wall,
              "cycles": cycles, "throughput": throughput}
    with open(os.environ["LLMCHIP_RESULT"], "w") as f:
        json.dump(result, f)
    dut._log.info("checked %d reads (%d beats) and %d writes in %.1f s; throughput %s",
                  len(want_rd), len(got_beats), len(want_wr), wall, throughput)


async def _measure(dut, dma, ram, beats: int, base: int, B: int, rng) -> dict:
    """Time one long aligned read and one long aligned write with no back-pressure."""
    for s in [*ram.channels, *dma.streams]:
        s.clear_pause_generator()
        s.pause = False
    probe = _Probe(dut, {
        "rd_cmd": (dut.rd_cmd__valid, dut.rd_cmd__ready),
        "rd_data": (dut.rd_data__valid, dut.rd_data__ready),
        "rd_done": (dut.rd_done__valid, dut.rd_done__ready),
        "wr_cmd": (dut.wr_cmd__valid, dut.wr_cmd__ready),
        "w": (dut.bus__wvalid, dut.bus__wready),
        "wr_done": (dut.wr_done__valid, dut.wr_done__ready),
    })
    n = beats * B
    dma.read((base, 1, n, 0))
    await _wait(dut, 20 * beats + 200, lambda: dma.rd_done.count() == 1, "the long read")
    dma.take_reads()
    dma.take_dones(dma.rd_done)
    rows = [rng.randbytes(n)]
    dma.write((base, 1, n, 0), rows, rng)
    await _wait(dut, 20 * beats + 200, lambda: dma.wr_done.count() == 1, "the long write")
    assert dma.take_dones(dma.wr_done) == [DmaError.OK]
    assert ram.read(base, n) == rows[0]
    await RisingEdge(dut.clk)
    probe.stop()
    c = probe.cycles
    assert len(c["rd_data"]) == beats and len(c["w"]) == beats

    def stats(first_cmd, data, done):
        span = data[-1] - data[0] + 1
        total = done[0] - first_cmd[0]
        return {"beats": beats, "data_cycles": span, "cycles_per_beat": span / beats,
                "cmd_to_done_cycles": total, "total_cycles_per_beat": total / beats}

    return {"read": stats(c["rd_cmd"], c["rd_data"], c["rd_done"]),
            "write": stats(c["wr_cmd"], c["w"], c["wr_done"])}
