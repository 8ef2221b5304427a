"""SimDram in Amaranth's simulator: bursts, timing, strobes, back-pressure and DECERR.

One testbench loop plays the AXI4 manager: each cycle it drives every channel, samples
the settled outputs, records the handshakes, then ticks. Timing checks count cycles from
the address handshake, as the component's docstring states them.
"""

from __future__ import annotations

from collections import deque

import pytest
from amaranth.sim import Simulator

from llmchip.rtl.axi import AxiBurst, AxiResp
from llmchip.tb.dram import SimDram

B = 16           # bytes per beat (128-bit bus)
SIZE = 4096      # bytes of DRAM in these tests


def run_bus(dut, *, reads=(), writes=(), rready=None, bready=None, ar_gap=None,
            max_cycles=5000):
    """Drive bursts through ``dut`` and return what came back.

    Parameters
    ----------
    reads : list of (addr, beats, id)
        Read bursts, issued in order as fast as ``arready`` and ``ar_gap`` allow.
    writes : list of (addr, [(data, strb), ...], id)
        Write bursts: AW first, W beats as soon as ``wready`` allows.
    rready, bready : callable(cycle) -> bool, optional
        Back-pressure patterns (always ready by default).
    ar_gap : callable(cycle) -> bool, optional
        Whether the manager may offer an AR in a cycle (always by default).

    Returns
    -------
    dict with ``ar``/``aw`` (handshake cycles), ``r`` (cycle, id, data, resp, last),
    ``w`` (cycles) and ``b`` (cycle, id, resp).
    """
    reads, writes = deque(reads), deque(writes)
    beats = deque()
    for k, (_, data, _) in enumerate(writes):
        beats.extend((d, s, i == len(data) - 1, k) for i, (d, s) in enumerate(data))
    n_r = sum(n for _, n, _ in reads)
    n_b = len(writes)
    out = {"ar": [], "aw": [], "r": [], "w": [], "b": []}
    bus = dut.bus

    async def testbench(ctx):
        for cycle in range(max_cycles):
            ar = reads[0] if reads and (ar_gap is None or ar_gap(cycle)) else None
            ctx.set(bus.arvalid, ar is not None)
            if ar is not None:
                ctx.set(bus.araddr, ar[0])
                ctx.set(bus.arlen, ar[1] - 1)
                ctx.set(bus.arid, ar[2])
                ctx.set(bus.arsize, 4)
                ctx.set(bus.arburst, AxiBurst.INCR)
            aw = writes[0] if writes else None
            ctx.set(bus.awvalid, aw is not None)
            if aw is not None:
                ctx.set(bus.awaddr, aw[0])
                ctx.set(bus.awlen, len(aw[1]) - 1)
                ctx.set(bus.awid, aw[2])
                ctx.set(bus.awsize, 4)
                ctx.set(bus.awburst, AxiBurst.INCR)
            # A burst's W beats are offered only once its AW was accepted.
            w_allowed = bool(beats) and beats[0][3] < len(out["aw"])
            ctx.set(bus.wvalid, bool(w_allowed))
            if w_allowed:
                ctx.set(bus.wdata, beats[0][0])
                ctx.set(bus.wstrb, beats[0][1])
                ctx.set(bus.wlast, beats[0][2])
            r_rdy = rready is None or rready(cycle)
            b_rdy = bready is None or bready(cycle)
            ctx.set(bus.rready, r_rdy)
            ctx.set(bus.bready, b_rdy)
            if ar is not None and ctx.get(bus.arready):
                out["ar"].append(cycle)
                reads.popleft()
            if aw is not None and ctx.get(bus.awready):
                out["aw"].append(cycle)
                writes.popleft()
            if w_allowed and ctx.get(bus.wready):
                out["w"].append(cycle)
                beats.popleft()
            if r_rdy and ctx.get(bus.rvalid):
                out["r"].append((cycle, ctx.get(bus.rid), ctx.get(bus.rdata),
                                 AxiResp(ctx.get(bus.rresp)), ctx.get(bus.rlast)))
            if b_rdy and ctx.get(bus.bvalid):
                out["b"].append((cycle, ctx.get(bus.bid), AxiResp(ctx.get(bus.bresp))))
            await ctx.tick()
            if len(out["r"]) == n_r and len(out["b"]) == n_b and not reads and not beats:
                return
        raise AssertionError(f"bus did not finish within {max_cycles} cycles: {out}")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return out


def words(rng, n):
    return [int.from_bytes(rng.bytes(B), "little") for _ in range(n)]


def write_bursts(rng, addr_beats, wid=0):
    """Full-strobe write bursts with random data; return (bursts, expected word map)."""
    bursts, expect = [], {}
    for addr, n in addr_beats:
        data = words(rng, n)
        bursts.append((addr, [(d, (1 << B) - 1) for d in data], wid))
        for i, d in enumerate(data):
            expect[addr // B + i] = d
    return bursts, expect


@pytest.mark.parametrize("latency", [2, 8])
def test_bursts_of_several_lengths(latency, rng):
    dut = SimDram(SIZE, 128, id_width=4, read_latency=latency)
    lengths = [1, 2, 3, 8, 16, 64]
    addrs, addr = [], 0
    for n in lengths:
        addrs.append((addr, n))
        addr += n * B
    writes, expect = write_bursts(rng, addrs, wid=5)
    reads = [(a, n, i) for i, (a, n) in enumerate(addrs)]
    out = run_bus(dut, writes=writes, reads=reads, ar_gap=lambda c: c > 150)
    assert [(i, r) for _, i, r in out["b"]] == [(5, AxiResp.OKAY)] * len(writes)
    got = out["r"]
    assert len(got) == sum(lengths)
    k = 0
    for burst, (a, n) in enumerate(addrs):
        for beat in range(n):
            cycle, rid, rdata, resp, last = got[k]
            assert (rid, resp, last) == (burst, AxiResp.OKAY, beat == n - 1)
            assert rdata == expect[a // B + beat], (burst, beat)
            k += 1
    # The first beat comes read_latency cycles after the AR, the rest back to back.
    assert got[0][0] == out["ar"][0] + latency
    assert [c for c, *_ in got] == list(range(got[0][0], got[0][0] + len(got)))


@pytest.mark.parametrize("latency", [2, 5, 8])
def test_back_to_back_single_beat_reads(latency, rng):
    dut = SimDram(SIZE, 128, read_latency=latency)
    writes, expect = write_bursts(rng, [(0, 64)])
    addrs = [int(a) for a in rng.integers(0, 64, size=40)]
    out = run_bus(dut, writes=writes, reads=[(a * B, 1, 0) for a in addrs],
                  ar_gap=lambda c: c >= 100)
    ar = out["ar"]
    # One AR accepted per cycle; each answered exactly read_latency cycles later.
    assert ar == list(range(ar[0], ar[0] + len(addrs)))
    assert [c for c, *_ in out["r"]] == [c + latency for c in ar]
    assert [d for _, _, d, _, _ in out["r"]] == [expect[a] for a in addrs]
    assert all(last and resp == AxiResp.OKAY for *_, resp, last in out["r"])


def test_queue_limits_outstanding_bursts(rng):
    """With more bursts outstanding than the queue holds, arready drops; nothing is lost."""
    dut = SimDram(SIZE, 128, read_latency=20, queue_depth=4)
    out = run_bus(dut, reads=[(a * B, 1, 0) for a in range(12)])
    assert len(out["r"]) == 12
    assert out["ar"][4] > out["ar"][3] + 1       # the fifth waits for room
    assert [c for c, *_ in out["r"]][:4] == [c + 20 for c in out["ar"][:4]]


def test_strobed_writes_and_write_response_timing(rng):
    dut = SimDram(SIZE, 128, write_latency=3)
    base, expect = write_bursts(rng, [(256, 4)])
    strobed = []
    for i in range(4):
        d, s = words(rng, 1)[0], int(rng.integers(0, 1 << B))
        strobed.append((d, s))
        mask = sum(0xFF << (8 * lane) for lane in range(B) if s >> lane & 1)
        expect[256 // B + i] = (expect[256 // B + i] & ~mask) | (d & mask)
    single = (1024, [(words(rng, 1)[0], 0)], 0)        # no strobe: nothing written
    out = run_bus(dut, writes=base + [(256, strobed, 1), single],
                  reads=[(256, 4, 0), (1024, 1, 0)],
                  ar_gap=lambda c: c > 60)
    assert [d for _, _, d, _, _ in out["r"]] == [expect[256 // B + i] for i in range(4)] + [0]
    # B comes write_latency cycles after the burst's last W beat.
    lasts = [out["w"][3], out["w"][7], out["w"][8]]
    assert [c for c, _, _ in out["b"]] == [c + 3 for c in lasts]
    assert [i for _, i, _ in out["b"]] == [0, 1, 0]


def test_backpressure_on_r_and_b(rng):
    dut = SimDram(SIZE, 128, read_latency=4)
    writes, expect = write_bursts(rng, [(0, 16), (512, 3), (2048, 1)])
    pattern = [bool(v) for v in rng.integers(0, 2, size=4096)]
    reads = [(0, 16, 0), (512, 3, 1), (2048, 1, 0), (16, 1, 1)]
    out = run_bus(dut, writes=writes, reads=reads, rready=lambda c: pattern[c],
                  bready=lambda c: pattern[c + 7], ar_gap=lambda c: c > 40)
    want = ([expect[i] for i in range(16)] + [expect[32 + i] for i in range(3)]
            + [expect[128], expect[1]])
    assert [d for _, _, d, _, _ in out["r"]] == want
    assert [i for _, i, _, _, _ in out["r"]] == [0] * 16 + [1] * 3 + [0, 1]
    assert len(out["b"]) == 3


def test_decerr_beyond_size(rng):
    dut = SimDram(SIZE, 128, read_latency=3)
    writes, expect = write_bursts(rng, [(SIZE - 2 * B, 2), (0, 1)])
    # A read crossing the end: in-range beats OKAY with data, the rest DECERR and zeros.
    # A write crossing the end: DECERR, in-range beats written, nothing wraps to 0.
    cross = (SIZE - B, [(w, (1 << B) - 1) for w in words(rng, 3)], 1)
    expect[SIZE // B - 1] = cross[1][0][0]
    out = run_bus(dut, writes=writes + [cross, (1 << 20, [(1, 0xFFFF)], 0)],
                  reads=[(SIZE - 2 * B, 4, 0), (1 << 31, 2, 1), (0, 1, 0)],
                  ar_gap=lambda c: c > 40)
    r = out["r"]
    assert [resp for *_, resp, _ in r] == [AxiResp.OKAY] * 2 + [AxiResp.DECERR] * 4 + [
        AxiResp.OKAY]
    assert [d for _, _, d, _, _ in r] == [expect[SIZE // B - 2], expect[SIZE // B - 1], 0, 0,
                                          0, 0, expect[0]]
    assert [last for *_, last in r] == [0, 0, 0, 1, 0, 1, 1]
    assert [resp for *_, resp in out["b"]] == [AxiResp.OKAY, AxiResp.OKAY, AxiResp.DECERR,
                                               AxiResp.DECERR]


def test_unsupported_bursts_get_slverr():
    dut = SimDram(SIZE, 128)
    bus = dut.bus
    seen = []

    async def testbench(ctx):
        ctx.set(bus.rready, 1)
        ctx.set(bus.arvalid, 1)
        ctx.set(bus.arlen, 1)
        ctx.set(bus.arsize, 2)                  # 4-byte beats on a 16-byte bus
        ctx.set(bus.arburst, AxiBurst.INCR)
        await ctx.tick()
        ctx.set(bus.arsize, 4)
        ctx.set(bus.arburst, AxiBurst.WRAP)
        await ctx.tick()
        ctx.set(bus.arvalid, 0)
        for _ in range(30):
            if ctx.get(bus.rvalid):
                seen.append((AxiResp(ctx.get(bus.rresp)), ctx.get(bus.rdata)))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    assert seen == [(AxiResp.SLVERR, 0)] * 4


@pytest.mark.parametrize(("kw", "exc", "match"), [
    ({"size": 100}, ValueError, "multiple of 16"),
    ({"size": 0}, ValueError, "size"),
    ({"size": 4096, "read_latency": 1}, ValueError, "read_latency"),
    ({"size": 4096, "write_latency": 0}, ValueError, "write_latency"),
    ({"size": 4096, "data_width": 96}, ValueError, "data_width"),
    ({"size": 4096, "queue_depth": 1}, ValueError, "queue_depth"),
    ({"size": 4096, "storage": "sram"}, ValueError, "storage"),
    ({"size": 4096.0}, TypeError, "size"),
])
def test_bad_parameters(kw, exc, match):
    with pytest.raises(exc, match=match):
        SimDram(**kw)
