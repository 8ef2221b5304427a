"""AxiDma in Amaranth's simulator, against a Python AXI4 subordinate with random delays.

The responder holds DRAM as a bytearray, can answer SLVERR or DECERR for address regions,
and checks every AR/AW (4 KB rule, ``max_burst``, size, INCR, alignment), the AXI rule
that a valid beat holds until accepted, and that no W beat precedes its burst's address.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import pytest
from amaranth.hdl import Fragment, Value
from amaranth.lib import wiring
from amaranth.sim import Simulator

from llmchip.rtl.axi import AxiBurst, AxiResp, axi4_signature, axi4lite_signature
from llmchip.rtl.dma import AxiDma, DmaError
from llmchip.tb.dma_build import apply_write, expected_read, random_command, region_code

MEM_BASE = 0x0001_0000          # 4 KB aligned; four pages, so rows can cross page boundaries
MEM_SIZE = 0x4000
HALF = MEM_BASE + MEM_SIZE // 2


@dataclass
class Cmd:
    addr: int
    rows: int
    row_bytes: int
    stride: int
    data: list[bytes] = field(default_factory=list)   # write rows

    @property
    def spec(self) -> tuple[int, int, int, int]:
        return self.addr, self.rows, self.row_bytes, self.stride

    @property
    def payload(self) -> dict:
        return {"addr": self.addr, "rows": self.rows, "row_bytes": self.row_bytes,
                "stride": self.stride}


class Harness:
    """Drives every DMA port and plays the AXI subordinate, one cycle at a time.

    A single testbench loop sets inputs, samples the DUT's settled outputs, ticks, then
    commits the handshakes that happened; that is several times faster in pysim than one
    coroutine per channel.
    """

    def __init__(self, dut: AxiDma, rng, *, mem: bytearray | None = None, bus_p=0.7,
                 stream_p=0.7, slverr=(), decerr=(), window=(MEM_BASE, MEM_SIZE)):
        self.dut, self.rng = dut, rng
        self.cfg = dut.config
        self.B = self.cfg.beat_bytes
        self.mem = mem if mem is not None else bytearray(rng.bytes(MEM_SIZE))
        self.bus_p, self.stream_p = bus_p, stream_p
        self.regions = ([(r, DmaError.SLVERR) for r in slverr]
                        + [(r, DmaError.DECERR) for r in decerr])
        self.window = window
        self.abort = 0
        self._abort_prev = 0
        self.hook = None
        self.cycle = 0
        # Stimulus and results of the DMA's streams.
        self.rd_cmds: deque[Cmd] = deque()
        self.wr_cmds: deque[Cmd] = deque()
        self.wr_beats: deque[int] = deque()
        self.rd_beats: list[tuple[bytes, int]] = []
        self.rd_dones: list[int] = []
        self.wr_dones: list[int] = []
        self.rd_beat_cycles: list[int] = []
        self._rd_cur = self._wr_cur = self._wd_cur = None
        # Bus state.
        self.ars: list[tuple[int, int]] = []
        self.aws: list[tuple[int, int]] = []
        self.w_count = 0
        self.w_cycles: list[int] = []
        self._r_beats: deque = deque()
        self._r_cur = None
        self._aw_pending: deque = deque()   # [addr, beats left, resp]
        self._b_queue: deque = deque()
        self._b_cur = None
        self._held: dict = {}

    # -- stimulus ---------------------------------------------------------------------

    def read(self, addr, rows, row_bytes, stride):
        self.rd_cmds.append(Cmd(addr, rows, row_bytes, stride))

    def write(self, addr, rows, row_bytes, stride):
        """Queue a write of random rows and their wr_data beats (ceil(row_bytes / B) per
        row; a dropped command consumes them too)."""
        cmd = Cmd(addr, rows, row_bytes, stride,
                  [bytes(self.rng.bytes(row_bytes)) for _ in range(rows)])
        self.wr_cmds.append(cmd)
        B = self.B
        n = -(-row_bytes // B) if row_bytes else 0
        for row in cmd.data:
            for j in range(n):
                chunk = row[j * B:(j + 1) * B]
                # Lanes past the row carry garbage: the strobes must keep it out of DRAM.
                chunk += bytes(self.rng.bytes(B - len(chunk)))
                self.wr_beats.append(int.from_bytes(chunk, "little"))
        return cmd

    # -- the memory -------------------------------------------------------------------

    def _mem_index(self, addr: int, n: int) -> int:
        assert MEM_BASE <= addr and addr + n <= MEM_BASE + MEM_SIZE, \
            f"bus access at {addr:#x}+{n} outside DRAM"
        return addr - MEM_BASE

    def _accept_ar(self, addr, length, size, burst, ident):
        self._check_burst("AR", addr, length, size, burst, ident)
        self.ars.append((addr, length + 1))
        B = self.B
        for i in range(length + 1):
            a = addr + i * B
            code = region_code(self.regions, a, a + B)
            if code:
                data, resp = int.from_bytes(self.rng.bytes(B), "little"), code + 1
            else:
                k = self._mem_index(a, B)
                data, resp = int.from_bytes(self.mem[k:k + B], "little"), AxiResp.OKAY
            self._r_beats.append((data, resp, int(i == length)))

    def _accept_aw(self, addr, length, size, burst, ident):
        self._check_burst("AW", addr, length, size, burst, ident)
        self.aws.append((addr, length + 1))
        self._aw_pending.append([addr, length + 1, AxiResp.OKAY])

    def _accept_w(self, data, strb, last):
        assert self._aw_pending, "W beat before its burst's address was accepted"
        burst = self._aw_pending[0]
        addr, B = burst[0], self.B
        lanes = [k for k in range(B) if strb >> k & 1]
        if lanes:
            code = region_code(self.regions, addr + lanes[0], addr + lanes[-1] + 1)
            if code:
                burst[2] = burst[2] if burst[2] != AxiResp.OKAY else code + 1
            else:
                k0 = self._mem_index(addr, B)
                raw = data.to_bytes(B, "little")
                for k in lanes:
                    self.mem[k0 + k] = raw[k]
        burst[0] += B
        burst[1] -= 1
        assert bool(last) == (burst[1] == 0), f"wlast={last} with {burst[1]} beats left"
        if burst[1] == 0:
            self._aw_pending.popleft()
            self._b_queue.append(burst[2])

    def _check_burst(self, ch, addr, length, size, burst, ident):
        B, beats = self.B, length + 1
        assert size == self.cfg.size_log2, f"{ch} size {size}"
        assert burst == AxiBurst.INCR, f"{ch} burst type {burst}"
        assert ident == 0, f"{ch} id {ident}"
        assert addr % B == 0, f"{ch} address {addr:#x} not beat aligned"
        assert beats <= self.cfg.max_burst, f"{ch} burst of {beats} beats"
        assert addr // 4096 == (addr + beats * B - 1) // 4096, \
            f"{ch} burst {addr:#x}+{beats * B} crosses a 4 KB boundary"

    # -- the clock loop ---------------------------------------------------------------

    def _hold(self, name, valid, payload, exempt=False):
        """AXI/stream rule: a beat on offer stays, unchanged, until it is accepted."""
        held = self._held.pop(name, None)
        if held is not None and not exempt:
            assert valid and payload == held, f"{name} changed before it was accepted"
        return held

    async def run(self, ctx, *, max_cycles: int, until):
        dut, bus, B = self.dut, self.dut.bus, self.B
        rnd = self.rng.random
        ctx.set(dut.window_base, self.window[0])
        ctx.set(dut.window_size, self.window[1])
        for _ in range(max_cycles):
            if self.hook:
                self.hook(self)
            ctx.set(dut.abort_req, self.abort)
            # Subordinate side.
            ctx.set(bus.arready, rnd() < self.bus_p)
            ctx.set(bus.awready, rnd() < self.bus_p)
            ctx.set(bus.wready, bool(self._aw_pending) and rnd() < self.bus_p)
            if self._r_cur is None and self._r_beats and rnd() < self.bus_p:
                self._r_cur = self._r_beats.popleft()
            ctx.set(bus.rvalid, self._r_cur is not None)
            if self._r_cur is not None:
                data, resp, last = self._r_cur
                ctx.set(bus.rdata, data)
                ctx.set(bus.rresp, resp)
                ctx.set(bus.rlast, last)
            if self._b_cur is None and self._b_queue and rnd() < self.bus_p:
                self._b_cur = self._b_queue.popleft()
            ctx.set(bus.bvalid, self._b_cur is not None)
            if self._b_cur is not None:
                ctx.set(bus.bresp, self._b_cur)
            # Producer and consumer side.
            if self._rd_cur is None and self.rd_cmds and rnd() < self.stream_p:
                self._rd_cur = self.rd_cmds.popleft()
            ctx.set(dut.rd_cmd.valid, self._rd_cur is not None)
            if self._rd_cur is not None:
                ctx.set(dut.rd_cmd.payload, self._rd_cur.payload)
            if self._wr_cur is None and self.wr_cmds and rnd() < self.stream_p:
                self._wr_cur = self.wr_cmds.popleft()
            ctx.set(dut.wr_cmd.valid, self._wr_cur is not None)
            if self._wr_cur is not None:
                ctx.set(dut.wr_cmd.payload, self._wr_cur.payload)
            if self._wd_cur is None and self.wr_beats and rnd() < self.stream_p:
                self._wd_cur = self.wr_beats.popleft()
            ctx.set(dut.wr_data.valid, self._wd_cur is not None)
            if self._wd_cur is not None:
                ctx.set(Value.cast(dut.wr_data.payload), self._wd_cur)
            ctx.set(dut.rd_data.ready, rnd() < self.stream_p)
            ctx.set(dut.rd_done.ready, rnd() < self.stream_p)
            ctx.set(dut.wr_done.ready, rnd() < self.stream_p)

            # Settled outputs of this cycle.
            g = ctx.get
            arv, awv, wv = g(bus.arvalid), g(bus.awvalid), g(bus.wvalid)
            ar = (g(bus.araddr), g(bus.arlen), g(bus.arsize), g(bus.arburst), g(bus.arid))
            aw = (g(bus.awaddr), g(bus.awlen), g(bus.awsize), g(bus.awburst), g(bus.awid))
            w = (g(bus.wdata), g(bus.wstrb), g(bus.wlast))
            ar_fire = arv and g(bus.arready)
            aw_fire = awv and g(bus.awready)
            w_fire = wv and g(bus.wready)
            r_fire = self._r_cur is not None and g(bus.rready)
            # Room for a burst's beats is reserved before it issues: R never stalls.
            assert self._r_cur is None or self.abort or r_fire, \
                f"rready low with an R beat on offer (cycle {self.cycle})"
            b_fire = self._b_cur is not None and g(bus.bready)
            rd_cmd_fire = self._rd_cur is not None and g(dut.rd_cmd.ready)
            wr_cmd_fire = self._wr_cur is not None and g(dut.wr_cmd.ready)
            wd_fire = self._wd_cur is not None and g(dut.wr_data.ready)
            rdv = g(dut.rd_data.valid)
            rd = g(Value.cast(dut.rd_data.payload)) if rdv else None
            rd_fire = rdv and g(dut.rd_data.ready)
            rdd = g(dut.rd_done.valid) and g(dut.rd_done.ready)
            rdd_err = g(dut.rd_done.payload.error)
            wrd = g(dut.wr_done.valid) and g(dut.wr_done.ready)
            wrd_err = g(dut.wr_done.payload.error)
            self._hold("AR", arv, ar)
            self._hold("AW", awv, aw)
            self._hold("W", wv, w)
            # An abort may withdraw a beat on offer (its consumer is reset with the DMA):
            # the engines see it from the cycle after `abort_req`.
            self._hold("rd_data", rdv, rd, exempt=self.abort or self._abort_prev)
            await ctx.tick()
            self.cycle += 1
            self._abort_prev = self.abort

            if arv and not ar_fire:
                self._held["AR"] = ar
            if awv and not aw_fire:
                self._held["AW"] = aw
            if wv and not w_fire:
                self._held["W"] = w
            if rdv and not rd_fire:
                self._held["rd_data"] = rd
            if ar_fire:
                self._accept_ar(*ar)
            if aw_fire:
                self._accept_aw(*aw)
            if w_fire:
                self.w_count += 1
                self.w_cycles.append(self.cycle)
                self._accept_w(*w)
            if r_fire:
                self._r_cur = None
            if b_fire:
                self._b_cur = None
            if rd_cmd_fire:
                self._rd_cur = None
            if wr_cmd_fire:
                self._wr_cur = None
            if wd_fire:
                self._wd_cur = None
            if rd_fire:
                data = (rd & ((1 << (8 * B)) - 1)).to_bytes(B, "little")
                self.rd_beats.append((data, rd >> (8 * B)))
                self.rd_beat_cycles.append(self.cycle)
            if rdd:
                self.rd_dones.append(rdd_err)
            if wrd:
                self.wr_dones.append(wrd_err)
            if until(self):
                return
        raise TimeoutError(f"not done after {max_cycles} cycles: {len(self.rd_dones)} read "
                           f"and {len(self.wr_dones)} write completions")

    def quiet(self) -> bool:
        """No burst is waiting for data or a response on the bus."""
        return not (self._r_beats or self._r_cur or self._aw_pending or self._b_queue
                    or self._b_cur)


def simulate(dut, h: Harness, *, max_cycles: int, until=None, after=None):
    """Run ``h`` until every queued command completed (or ``until``), then ``after``."""
    n_rd, n_wr = len(h.rd_cmds), len(h.wr_cmds)
    until = until or (lambda h: len(h.rd_dones) == n_rd and len(h.wr_dones) == n_wr)
    state = {}

    async def bench(ctx):
        await h.run(ctx, max_cycles=max_cycles, until=until)
        if after:
            await after(ctx, h)
        state["idle"] = ctx.get(dut.idle)
        state["bytes_read"] = ctx.get(dut.bytes_read)
        state["bytes_written"] = ctx.get(dut.bytes_written)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return state


# -- golden model ---------------------------------------------------------------------


def expected(mem: bytes, cmd: Cmd, B: int, regions=()):
    """The golden rd_data beats and completion code of ``cmd`` (DRAM at ``MEM_BASE``)."""
    return expected_read(mem, cmd.spec, B, regions, base=MEM_BASE)


def written(mem: bytearray, cmd: Cmd, B: int, regions=()) -> int:
    """Apply write ``cmd`` to the golden DRAM image; return its completion code."""
    return apply_write(mem, cmd.spec, cmd.data, B, regions, base=MEM_BASE)


def check_reads(h: Harness, mem: bytes, cmds: list[Cmd], codes=None, regions=()):
    """Compare every rd_data beat, ``last`` flag and completion with the golden model."""
    B, i = h.B, 0
    want_codes = []
    for n, cmd in enumerate(cmds):
        code = codes[n] if codes is not None else None
        if code == DmaError.OUT_OF_WINDOW:
            beats = [bytes(B)] * (cmd.rows * -(-cmd.row_bytes // B))
        elif code == DmaError.BAD_COMMAND:
            beats = []
        else:
            beats, err = expected(mem, cmd, B, regions)
            code = err if code is None else code
        for j, want in enumerate(beats):
            got, last = h.rd_beats[i]
            assert got == want, (f"read {n} {cmd.payload} beat {j}: got {got.hex()}, "
                                 f"want {want.hex()}")
            assert last == (j == len(beats) - 1), f"read {n} beat {j}: last={last}"
            i += 1
        want_codes.append(code)
    assert i == len(h.rd_beats), f"{len(h.rd_beats) - i} extra rd_data beats"
    assert h.rd_dones == want_codes


CONFIGS = [dict(data_width=32, max_burst=4, max_outstanding=2),
           dict(data_width=64, max_burst=8, max_outstanding=4)]


# -- tests ----------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    (dict(data_width=48), "data_width must be one of 32, 64, 128, 256, 512, not 48"),
    (dict(max_burst=3), "max_burst must be a power of two, not 3"),
    (dict(data_width=512, max_burst=128), "max_burst must be at most 64 .* not 128"),
    (dict(max_burst=512), "max_burst must be between 1 and 256, not 512"),
    (dict(addr_width=8), "addr_width must be between 12 and 64, not 8"),
    (dict(max_outstanding=0), "max_outstanding must be between 1 and 64, not 0"),
    (dict(id_width=0), "id_width must be between 1 and 32, not 0"),
])
def test_bad_parameters_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AxiDma(**kwargs)


def test_parameter_types_are_checked():
    with pytest.raises(TypeError, match="data_width must be an int, not str '128'"):
        AxiDma(data_width="128")
    with pytest.raises(TypeError, match="max_burst must be an int, not bool True"):
        AxiDma(max_burst=True)
    with pytest.raises(ValueError, match="data_width must be one of 32, 64, 128, 256, 512, "
                                         "not 16"):
        axi4_signature(data_width=16)
    with pytest.raises(ValueError, match="data_width must be one of 32, 64, not 128"):
        axi4lite_signature(data_width=128)


def test_port_names_follow_axi():
    """Flattened names are what cocotbext-axi looks for behind the prefix ``bus_``."""
    dut = AxiDma(data_width=64, id_width=3)
    names = {"__".join(map(str, path)): len(Value.cast(v))
             for path, _, v in dut.signature.flatten(dut)}
    for ch in ("aw", "ar"):
        for sig, width in (("id", 3), ("addr", 32), ("len", 8), ("size", 3), ("burst", 2),
                           ("valid", 1), ("ready", 1)):
            assert names[f"bus__{ch}{sig}"] == width
    for sig, width in (("wdata", 64), ("wstrb", 8), ("wlast", 1), ("bid", 3), ("bresp", 2),
                       ("rid", 3), ("rdata", 64), ("rresp", 2), ("rlast", 1)):
        assert names[f"bus__{sig}"] == width
    assert names["rd_cmd__payload"] == 96 and names["rd_data__payload"] == 65
    assert names["wr_data__payload"] == 64 and names["wr_done__payload"] == 3
    Fragment.get(dut, None)  # elaborates (and is not left unused)
    lite = axi4lite_signature()
    assert lite.members["awaddr"].flow == wiring.In and lite.members["rdata"].flow == wiring.Out


@pytest.mark.parametrize("params", CONFIGS, ids=["32b", "64b"])
def test_reads_copy_rows(params, rng):
    """Random 2D reads (unaligned, 1-byte rows, rows over 4 KB and over several bursts)."""
    dut = AxiDma(**params)
    h = Harness(dut, rng)
    B, mb = h.B, dut.config.max_burst
    page = MEM_BASE + 0x1000
    fixed = [(page - 3, 1, 1, 0),                        # one byte
             (page - 13, 2, 40, 0x1000),                 # each row crosses a 4 KB boundary
             (MEM_BASE + 5, 1, 3 * B * mb + 7, 0),       # longer than a few bursts
             (MEM_BASE + 2 * B, 3, 2 * B, 2 * B),        # aligned, back to back
             (MEM_BASE + 0x2F00 + 1, 4, B + 1, 3),       # overlapping rows
             (MEM_BASE + 0x100, 3, B - 1, 0)]            # the same row three times
    cmds = [Cmd(*c) for c in fixed]
    cmds += [Cmd(*random_command(rng, MEM_BASE, MEM_BASE + MEM_SIZE, B, mb)) for _ in range(8)]
    for c in cmds:
        h.read(c.addr, c.rows, c.row_bytes, c.stride)
    mem = bytes(h.mem)
    state = simulate(dut, h, max_cycles=20000)
    check_reads(h, mem, cmds)
    assert state["bytes_read"] == sum(c.rows * c.row_bytes for c in cmds)
    assert state["idle"] and h.quiet()


@pytest.mark.parametrize("params", CONFIGS, ids=["32b", "64b"])
def test_writes_copy_rows(params, rng):
    """Random 2D writes: exactly the row bytes land in DRAM, in command order."""
    dut = AxiDma(**params)
    h = Harness(dut, rng)
    B, mb = h.B, dut.config.max_burst
    page = MEM_BASE + 0x3000
    fixed = [(page - 3, 1, 1, 0), (page - 13, 2, 40, 0x80), (MEM_BASE + 7, 1, 3 * B * mb + 5, 0),
             (MEM_BASE + 0x800, 3, 2 * B, 2 * B), (MEM_BASE + 0x901, 4, B + 3, 2)]
    fixed += [random_command(rng, MEM_BASE, MEM_BASE + MEM_SIZE, B, mb) for _ in range(8)]
    expect = bytearray(h.mem)
    cmds = [h.write(*c) for c in fixed]
    for c in cmds:
        assert written(expect, c, B) == DmaError.OK
    state = simulate(dut, h, max_cycles=20000)
    assert h.wr_dones == [DmaError.OK] * len(cmds)
    assert h.mem == expect
    assert not h.wr_beats, "wr_data beats left over"
    assert state["bytes_written"] == sum(c.rows * c.row_bytes for c in cmds)
    assert state["idle"] and h.quiet()


def test_reads_and_writes_run_concurrently(rng):
    dut = AxiDma(**CONFIGS[1])
    h = Harness(dut, rng)
    B, mb = h.B, dut.config.max_burst
    reads = [Cmd(*random_command(rng, MEM_BASE, HALF, B, mb)) for _ in range(5)]
    for c in reads:
        h.read(c.addr, c.rows, c.row_bytes, c.stride)
    mem = bytes(h.mem)
    expect = bytearray(h.mem)
    writes = [h.write(*random_command(rng, HALF, MEM_BASE + MEM_SIZE, B, mb)) for _ in range(5)]
    for c in writes:
        written(expect, c, B)
    overlap = []

    def watch(h):
        # Both engines have a burst in flight in the same cycle at least once.
        overlap.append(bool(h._r_beats or h._r_cur) and bool(h._aw_pending))

    h.hook = watch
    simulate(dut, h, max_cycles=20000)
    check_reads(h, mem, reads)
    assert h.wr_dones == [DmaError.OK] * len(writes) and h.mem == expect
    assert any(overlap)


def test_window_and_malformed_commands(rng):
    """No bus traffic for rejected commands; reads still deliver zero beats, writes drop."""
    dut = AxiDma(**CONFIGS[0])
    B = dut.config.beat_bytes
    base, size = MEM_BASE + 0x1000, 0x2000
    h = Harness(dut, rng, window=(base, size))
    cases = [  # (addr, rows, row_bytes, stride, expected code)
        (base - 1, 1, 4, 0, DmaError.OUT_OF_WINDOW),             # starts below the window
        (base + size - 4, 1, 5, 0, DmaError.OUT_OF_WINDOW),      # ends past it
        (base, 3, 16, size // 2, DmaError.OUT_OF_WINDOW),        # the last row is past it
        (base, 0, 16, 0, DmaError.BAD_COMMAND),
        (base, 2, 0, 0, DmaError.BAD_COMMAND),
        (base + size - 16, 2, 8, 8, DmaError.OK),                # ends exactly at the limit
        (base + 3, 2, 9, 100, DmaError.OK),
    ]
    codes = [c[4] for c in cases]
    reads = [Cmd(*c[:4]) for c in cases]
    for c in reads:
        h.read(c.addr, c.rows, c.row_bytes, c.stride)
    mem = bytes(h.mem)
    simulate(dut, h, max_cycles=5000)
    check_reads(h, mem, reads, codes=codes)
    for addr, beats in h.ars:
        assert base <= addr and addr + beats * B <= base + size
    assert len(h.ars) == 2 + 2   # the two good commands: 2 rows, 1 burst each

    # Writes to the same places, in a second run (so reads and writes do not race).
    h = Harness(dut, rng, window=(base, size), mem=h.mem)
    expect = bytearray(h.mem)
    for *c, code in cases:
        cmd = h.write(*c)
        if code == DmaError.OK:
            written(expect, cmd, B)
    simulate(dut, h, max_cycles=5000)
    assert h.wr_dones == codes
    assert h.mem == expect and not h.wr_beats, "dropped writes must consume their wr_data"
    for addr, beats in h.aws:
        assert base <= addr and addr + beats * B <= base + size
    assert len(h.aws) == 2 + 2   # the two good commands: 2 rows, 1 burst each


def test_commands_past_the_address_space(rng):
    """A command that would wrap past 2**addr_width is out of window, whatever the window."""
    dut = AxiDma(**CONFIGS[0])
    h = Harness(dut, rng, window=(0xFFFF_F000, 0x1_0000_0000))
    h.read(0xFFFF_FF00, 1, 0x101, 0)
    h.read(0xFFFF_F000, 2, 16, 0x8000_0000)
    h.write(0xFFFF_FFF0, 2, 8, 0x10)
    simulate(dut, h, max_cycles=2000)
    assert h.rd_dones == [DmaError.OUT_OF_WINDOW] * 2
    assert h.wr_dones == [DmaError.OUT_OF_WINDOW]
    assert len(h.rd_beats) == -(-0x101 // h.B) + 2 * 4
    assert not h.ars and not h.aws


@pytest.mark.parametrize("max_outstanding", [2, 4])
def test_slow_consumer_never_stalls_the_r_channel(max_outstanding, rng):
    """A consumer that takes one beat in five: bursts wait for buffer room (the credit),
    so every R beat is taken as it comes (the harness checks rready), and data arrive
    intact."""
    dut = AxiDma(data_width=64, max_burst=8, max_outstanding=max_outstanding)
    h = Harness(dut, rng, bus_p=1.0, stream_p=0.2)
    cmd = Cmd(MEM_BASE + 5, 3, 700, 1024)
    h.read(*cmd.spec)
    mem = bytes(h.mem)
    simulate(dut, h, max_cycles=20000)
    check_reads(h, mem, [cmd])


def test_span_of_long_strides(rng):
    """The last row's start, ``(rows - 1) * stride``, counts every bit of the stride: with
    strides of 2**16 and more the last row lies past the window (and every smaller
    multiple of the stride would not)."""
    dut = AxiDma(**CONFIGS[0])
    base, size = 0x0001_0000, 0x0002_0000
    h = Harness(dut, rng, window=(base, size))
    h.read(base, 2, 16, 0x0002_0000)            # last row at base + 0x20000: past the end
    h.read(base, 3, 16, 0x0001_0010)            # last row at base + 0x20020: past the end
    h.write(base + 0x100, 5, 8, 0x0000_8001)    # last row at base + 0x20104: past the end
    # Last rows at base + 2**34 + 1 and base + 2**35 + 16: past the address space,
    # though the spans' low 34 bits alone would put them inside the window.
    h.read(base, 6, 16, 0xCCCC_CCCD)
    h.read(base, 17, 16, 0x8000_0001)
    simulate(dut, h, max_cycles=2000)
    assert h.rd_dones == [DmaError.OUT_OF_WINDOW] * 4
    assert h.wr_dones == [DmaError.OUT_OF_WINDOW]
    assert not h.ars and not h.aws


def test_bus_errors(rng):
    """SLVERR/DECERR complete the command with that code; no beat is lost, bad data is 0."""
    dut = AxiDma(**CONFIGS[1])
    B = dut.config.beat_bytes
    slv = (MEM_BASE + 0x1100, MEM_BASE + 0x1140)
    dec = (MEM_BASE + 0x2200, MEM_BASE + 0x2208)
    # Writes get regions of their own in the last page: reads and writes run concurrently.
    slv_w = (MEM_BASE + 0x3100, MEM_BASE + 0x3140)
    dec_w = (MEM_BASE + 0x3A00, MEM_BASE + 0x3A08)
    h = Harness(dut, rng, slverr=[slv, slv_w], decerr=[dec, dec_w])
    regions = h.regions
    reads = [Cmd(slv[0] - 50, 1, 200, 0),            # middle beats fail
             Cmd(MEM_BASE + 0x10, 2, 64, 0x40),       # clean
             Cmd(dec[0] - 3, 3, 5, 0x40),             # the first row's last bytes fail
             Cmd(slv[0] - 4, 2, 8, dec[0] - slv[0]),  # SLVERR, then DECERR: the first wins
             Cmd(MEM_BASE + 0x2803, 1, 100, 0)]      # clean again afterwards
    for c in reads:
        h.read(c.addr, c.rows, c.row_bytes, c.stride)
    mem = bytes(h.mem)
    expect = bytearray(h.mem)
    writes = [h.write(slv_w[1] - 9, 1, 30, 0), h.write(MEM_BASE + 0x3500, 2, 20, 0x20),
              h.write(dec_w[0] - 60, 2, 61, 0x100), h.write(MEM_BASE + 0x3801, 1, 3, 0)]
    codes = [written(expect, c, B, regions) for c in writes]
    assert codes == [DmaError.SLVERR, DmaError.OK, DmaError.DECERR, DmaError.OK]
    state = simulate(dut, h, max_cycles=10000)
    check_reads(h, mem, reads, regions=regions)
    assert h.rd_dones == [DmaError.SLVERR, DmaError.OK, DmaError.DECERR, DmaError.SLVERR,
                          DmaError.OK]
    assert h.wr_dones == codes
    assert h.mem == expect
    assert state["idle"] and h.quiet()


@pytest.mark.parametrize("pulse", [True, False], ids=["pulse", "held"])
def test_abort_mid_transfer_reaches_idle(pulse, rng):
    """Abort stops new bursts, completes the ones on the bus, reports ABORTED, goes idle;
    afterwards both engines work again."""
    dut = AxiDma(**CONFIGS[1])
    h = Harness(dut, rng, bus_p=0.5)
    B = h.B
    h.read(MEM_BASE, 8, 600, 640)
    h.read(MEM_BASE + 0x3000, 1, 64, 0)
    h.write(HALF, 8, 600, 640)
    h.write(HALF + 0x1800, 1, 64, 0)
    seen = {}

    def abort_hook(h):
        if h.cycle == 150:
            seen["ar"], seen["aw"] = len(h.ars), len(h.aws)
            h.abort = 1
            # The producer is reset with the DMA: it offers no more of the aborted write's
            # data. (Once an engine's abort is over it takes data again, and after a pulse
            # that can be while the other engine still aborts.)
            h.wr_beats.clear()
            h._wd_cur = None
        elif pulse and h.cycle == 151:
            h.abort = 0

    h.hook = abort_hook
    # The producer and consumer are reset along with the DMA: a fresh harness drives the
    # streams afterwards (the aborted write's remaining wr_data beats are dropped).
    h2 = Harness(dut, rng, mem=h.mem)
    rd = Cmd(MEM_BASE + 3, 2, 50, 70)
    h2.read(rd.addr, rd.rows, rd.row_bytes, rd.stride)
    wr = h2.write(HALF + 9, 2, 33, 40)

    async def bench(ctx):
        await h.run(ctx, max_cycles=5000,
                    until=lambda h: len(h.rd_dones) + len(h.wr_dones) == 4)
        for _ in range(200):
            if ctx.get(dut.idle):
                break
            await ctx.tick()
        else:
            raise TimeoutError("not idle 200 cycles after the last completion")
        seen["quiet"] = h.quiet()
        h.abort = 0
        ctx.set(dut.abort_req, 0)
        await ctx.tick()
        seen["mem"] = bytes(h2.mem)
        await h2.run(ctx, max_cycles=3000,
                     until=lambda h: len(h.rd_dones) == 1 and len(h.wr_dones) == 1)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()

    assert h.rd_dones == [DmaError.ABORTED] * 2
    assert h.wr_dones == [DmaError.ABORTED] * 2
    assert seen["quiet"], "bursts left unfinished on the bus"
    assert h.w_count == sum(n for _, n in h.aws), "a burst was not given all its W beats"
    assert 0 < seen["ar"] < 40 and 0 < seen["aw"] < 40, seen
    assert len(h.rd_beats) < 8 * 600 // B, "the read ran to completion despite the abort"
    assert len(h.aws) < 8 * 600 // (B * 8), "the write ran to completion despite the abort"
    # Afterwards: exact results again.
    check_reads(h2, seen["mem"], [rd])
    expect = bytearray(seen["mem"])
    written(expect, wr, B)
    assert h2.wr_dones == [DmaError.OK] and h2.mem == expect


def test_abort_while_idle_is_harmless(rng):
    dut = AxiDma(**CONFIGS[0])
    h = Harness(dut, rng)
    h.abort = 1

    def release(h):
        if h.cycle == 5:
            h.abort = 0
            h.read(MEM_BASE + 1, 1, 7, 0)

    h.hook = release
    mem = bytes(h.mem)
    simulate(dut, h, max_cycles=500, until=lambda h: len(h.rd_dones) == 1)
    check_reads(h, mem, [Cmd(MEM_BASE + 1, 1, 7, 0)])


MIX_CONFIGS = [dict(data_width=32, max_burst=1, max_outstanding=1),
               dict(data_width=64, max_burst=2, max_outstanding=3),
               dict(data_width=128, max_burst=16, max_outstanding=4)]


@pytest.mark.parametrize("params", MIX_CONFIGS, ids=["32b-mb1-mo1", "64b-mb2-mo3", "128b"])
def test_random_mix(params, rng):
    """Random reads, writes, rejected commands and bus errors at random back-pressure."""
    dut = AxiDma(**params)
    B, mb = dut.config.beat_bytes, dut.config.max_burst
    regions_r = [(MEM_BASE + 0x1000 + 64 * k, MEM_BASE + 0x1000 + 64 * k + 8) for k in (1, 9)]
    regions_w = [(HALF + 0x1000 + 64 * k, HALF + 0x1000 + 64 * k + 8) for k in (1, 9)]
    h = Harness(dut, rng, bus_p=float(rng.uniform(0.3, 1.0)),
                stream_p=float(rng.uniform(0.3, 1.0)),
                slverr=[regions_r[0], regions_w[0]], decerr=[regions_r[1], regions_w[1]])

    def command(lo, hi):
        kind = rng.choice(["ok"] * 6 + ["below", "above", "rows0", "bytes0"])
        addr, rows, row_bytes, stride = random_command(rng, lo, hi, B, mb)
        if kind == "below":
            addr = MEM_BASE - int(rng.integers(1, 64))
        elif kind == "above":
            addr = MEM_BASE + MEM_SIZE - int(rng.integers(0, row_bytes))
        elif kind == "rows0":
            rows = 0
        elif kind == "bytes0":
            row_bytes = 0
        code = {"below": DmaError.OUT_OF_WINDOW, "above": DmaError.OUT_OF_WINDOW,
                "rows0": DmaError.BAD_COMMAND, "bytes0": DmaError.BAD_COMMAND}.get(kind)
        return (addr, rows, row_bytes, stride), code

    reads, read_codes = [], []
    for _ in range(20):
        c, code = command(MEM_BASE, HALF)
        reads.append(Cmd(*c))
        h.read(*c)
        read_codes.append(code)
    mem = bytes(h.mem)
    expect = bytearray(h.mem)
    write_codes = []
    for _ in range(20):
        c, code = command(HALF, MEM_BASE + MEM_SIZE)
        cmd = h.write(*c)
        write_codes.append(code if code is not None else written(expect, cmd, B, h.regions))
    simulate(dut, h, max_cycles=40000)
    read_codes = [code if code is not None else expected(mem, c, B, h.regions)[1]
                  for c, code in zip(reads, read_codes, strict=True)]
    check_reads(h, mem, reads, codes=read_codes, regions=h.regions)
    assert h.wr_dones == write_codes
    assert h.mem == expect and not h.wr_beats


@pytest.mark.parametrize("offset, rows, row_bytes", [(0, 1, 2048), (3, 1, 2048), (3, 64, 13)],
                         ids=["long-aligned", "long-unaligned", "short-unaligned-rows"])
def test_full_rate_streaming(offset, rows, row_bytes, rng):
    """With no back-pressure, data moves at one beat per cycle in both directions: long
    rows, and short unaligned rows too (no bubble between rows)."""
    dut = AxiDma(data_width=64, max_burst=8, max_outstanding=4)
    h = Harness(dut, rng, bus_p=1.0, stream_p=1.0)
    B = h.B
    cmd = Cmd(MEM_BASE + offset, rows, row_bytes, 32 if rows > 1 else 0)
    h.read(*cmd.spec)
    mem = bytes(h.mem)
    simulate(dut, h, max_cycles=4000)
    check_reads(h, mem, [cmd])
    bus_beats = sum(n for _, n in h.ars)
    span = h.rd_beat_cycles[-1] - h.rd_beat_cycles[0] + 1
    assert span <= max(bus_beats, len(h.rd_beats)) + 2, \
        f"{len(h.rd_beats)} beats ({bus_beats} on the bus) took {span} cycles"

    h = Harness(dut, rng, bus_p=1.0, stream_p=1.0)
    expect = bytearray(h.mem)
    written(expect, h.write(HALF + offset, rows, row_bytes, cmd.stride), B)
    simulate(dut, h, max_cycles=4000)
    assert h.mem == expect
    span = h.w_cycles[-1] - h.w_cycles[0] + 1
    assert span <= h.w_count + 2, f"{h.w_count} W beats took {span} cycles"
