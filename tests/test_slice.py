"""The stream register slice in Amaranth's simulator: order, no loss or repeat under random
valid/ready, full throughput, and outputs that do not follow the other side combinationally."""

import pytest
from amaranth.hdl import unsigned
from amaranth.lib import data
from amaranth.sim import Simulator

from llmchip.rtl.axi import AXI4_MANAGER_CHANNELS, AXI4_SUBORDINATE_CHANNELS
from llmchip.rtl.slice import AxiRegisterSlice, DataDoneSlices, RegisterSlice


def simulate(dut, bench) -> None:
    """Run ``bench`` as the testbench of ``dut`` on a clock."""
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


# Beats with a `last` flag in bit 15.
LAST_BEAT = data.StructLayout({"data": unsigned(15), "last": 1})


def run(rng, beats, p_valid, p_ready, cycles=2000, last=False):
    dut = RegisterSlice(LAST_BEAT, last="last") if last else RegisterSlice(unsigned(16))
    i_payload, o_payload = ((dut.i.payload.as_value(), dut.o.payload.as_value()) if last
                            else (dut.i.payload, dut.o.payload))
    got, got_at, sent_at = [], [], []

    async def bench(ctx):
        k = 0
        for cycle in range(cycles):
            offer = k < len(beats) and rng.random() < p_valid
            ctx.set(dut.i.valid, offer)
            ctx.set(i_payload, beats[k] if offer else 0)
            ready = rng.random() < p_ready
            ctx.set(dut.o.ready, ready)
            # `i.ready` and `o.valid` are registers: the other side's inputs of this cycle
            # do not change them.
            i_ready, o_valid = ctx.get(dut.i.ready), ctx.get(dut.o.valid)
            ctx.set(dut.o.ready, not ready)
            ctx.set(dut.i.valid, not offer)
            assert (ctx.get(dut.i.ready), ctx.get(dut.o.valid)) == (i_ready, o_valid)
            ctx.set(dut.o.ready, ready)
            ctx.set(dut.i.valid, offer)
            if ctx.get(dut.holding) != (o_valid or not i_ready):
                raise AssertionError("holding does not match the registers")
            if last:
                # The beats held are those sent and not yet received.
                held = beats[len(got):len(sent_at)]
                want = any(b >> 15 for b in held)
                if ctx.get(dut.holding_last) != want:
                    raise AssertionError(f"cycle {cycle}: holding_last is not {want} with "
                                         f"{[hex(b) for b in held]} held")
            if o_valid and ready:
                got.append(ctx.get(o_payload))
                got_at.append(cycle)
            if offer and i_ready:
                sent_at.append(cycle)
                k += 1
            await ctx.tick()
            if len(got) == len(beats):
                return
        raise TimeoutError(f"{len(got)} of {len(beats)} beats after {cycles} cycles")

    simulate(dut, bench)
    return got, got_at, sent_at


@pytest.mark.parametrize("p_valid, p_ready", [(1.0, 1.0), (0.7, 0.5), (0.3, 0.9), (1.0, 0.2)])
def test_beats_pass_in_order_once(p_valid, p_ready, rng):
    beats = [int(v) for v in rng.integers(0, 2**16, size=200)]
    got, _, _ = run(rng, beats, p_valid, p_ready)
    assert got == beats


def test_full_throughput_and_one_cycle_latency(rng):
    beats = list(range(100))
    got, got_at, sent_at = run(rng, beats, 1.0, 1.0)
    assert got == beats
    assert sent_at == list(range(100)), "the slice refused a beat at full rate"
    assert got_at == [c + 1 for c in sent_at]


@pytest.mark.parametrize("p_valid, p_ready", [(1.0, 1.0), (0.7, 0.5), (1.0, 0.2)])
def test_holding_last_follows_the_held_beats(p_valid, p_ready, rng):
    # Every third beat or so is a command's last: `holding_last` must say whether one of
    # the beats inside the slice (output or skid register) is.
    beats = [int(v) | (int(f) << 15) for v, f in zip(rng.integers(0, 2**15, size=200),
                                                     rng.random(200) < 0.3, strict=True)]
    got, _, _ = run(rng, beats, p_valid, p_ready, last=True)
    assert got == beats


def test_holding_last_needs_a_field():
    plain, marked = RegisterSlice(unsigned(16)), RegisterSlice(LAST_BEAT, last="last")
    plain._MustUse__silence = marked._MustUse__silence = True   # never elaborated
    assert "holding_last" not in plain.signature.members
    assert "holding_last" in marked.signature.members


def run_data_done(rng, commands, p_ready, cycles=5000):
    """A producer with a DMA read engine's contract (a command's completion after its last
    beat was taken, one completion register that must be free before the next last beat
    goes out) feeds :class:`DataDoneSlices`; the consumer takes data and completions at
    random. Returns, per completion, the number of commands whose last beat had been taken
    by then."""
    dut = DataDoneSlices(LAST_BEAT, unsigned(8))
    beats = [(k, j == n - 1) for k, n in enumerate(commands) for j in range(n)]
    seen = []

    async def bench(ctx):
        b, done_pending, done_next, lasts = 0, False, 0, 0
        for _ in range(cycles):
            offer = b < len(beats) and not (beats[b][1] and done_pending)
            ctx.set(dut.data_i.valid, offer)
            if offer:
                ctx.set(dut.data_i.payload.as_value(), beats[b][0] | (beats[b][1] << 15))
            ctx.set(dut.done_i.valid, done_pending)
            ctx.set(dut.done_i.payload, done_next)
            take_data = rng.random() < p_ready
            take_done = rng.random() < p_ready
            ctx.set(dut.data_o.ready, take_data)
            ctx.set(dut.done_o.ready, take_done)
            g = ctx.get
            if take_data and g(dut.data_o.valid):
                lasts += g(dut.data_o.payload.as_value()) >> 15
            if take_done and g(dut.done_o.valid):
                seen.append((g(dut.done_o.payload), lasts))
            accepted = offer and g(dut.data_i.ready)
            done_taken = done_pending and g(dut.done_i.ready)
            await ctx.tick()
            if done_taken:
                done_pending, done_next = False, done_next + 1
            if accepted:
                if beats[b][1]:
                    done_pending = True
                b += 1
            if len(seen) == len(commands):
                return
        raise TimeoutError(f"{len(seen)} of {len(commands)} completions")

    simulate(dut, bench)
    return seen


@pytest.mark.parametrize("p_ready", [1.0, 0.6, 0.25])
def test_completions_never_overtake_their_data(p_ready, rng):
    commands = [int(n) for n in rng.integers(1, 4, size=150)]
    seen = run_data_done(rng, commands, p_ready)
    assert [k for k, _ in seen] == list(range(len(commands)))
    early = [k for k, lasts in seen if lasts < k + 1]
    assert not early, f"completions {early[:5]} came before their command's last beat"


@pytest.mark.parametrize("p_valid, p_ready", [(1.0, 1.0), (0.6, 0.5)])
def test_axi_slice_passes_every_channel_in_order(p_valid, p_ready, rng):
    """Each of the five channels carries its beats in order, once, one cycle later at full
    rate; the far side's `ready` and `valid` do not reach the near side in the same cycle;
    `holding` follows the beats in flight."""
    dut = AxiRegisterSlice(32, 64, 2)
    channels = [(dut.manager, dut.bus, ch) for ch in AXI4_MANAGER_CHANNELS] + \
               [(dut.bus, dut.manager, ch) for ch in AXI4_SUBORDINATE_CHANNELS]
    n = 150
    beats = {ch[0]: [{p: int(rng.integers(0, 2 ** min(len(getattr(src, p)), 62)))
                      for p in ch[2]} for _ in range(n)] for src, _, ch in channels}
    got = {ch[0]: [] for _, _, ch in channels}
    cycles = {"end": None}

    async def bench(ctx):
        sent = dict.fromkeys(got, 0)
        for cycle in range(4 * n):
            offers, readies = {}, {}
            for src, dst, (valid, ready, payload) in channels:
                k = sent[valid]
                offers[valid] = k < n and rng.random() < p_valid
                ctx.set(getattr(src, valid), offers[valid])
                for p in payload:
                    ctx.set(getattr(src, p), beats[valid][k][p] if offers[valid] else 0)
                readies[valid] = rng.random() < p_ready
                ctx.set(getattr(dst, ready), readies[valid])
            seen = [(ctx.get(getattr(src, ready)), ctx.get(getattr(dst, valid)))
                    for src, dst, (valid, ready, _) in channels]
            for src, dst, (valid, ready, _) in channels:
                ctx.set(getattr(dst, ready), not readies[valid])
                ctx.set(getattr(src, valid), not offers[valid])
            assert seen == [(ctx.get(getattr(src, ready)), ctx.get(getattr(dst, valid)))
                            for src, dst, (valid, ready, _) in channels], \
                f"cycle {cycle}: a handshake passed the slice combinationally"
            for src, dst, (valid, ready, payload) in channels:
                ctx.set(getattr(dst, ready), readies[valid])
                ctx.set(getattr(src, valid), offers[valid])
                if ctx.get(getattr(dst, valid)) and readies[valid]:
                    got[valid].append({p: ctx.get(getattr(dst, p)) for p in payload})
                if offers[valid] and ctx.get(getattr(src, ready)):
                    sent[valid] += 1
            await ctx.tick()
            # Beats taken in and not yet given out are held.
            assert ctx.get(dut.holding) == any(sent[v] > len(got[v]) for v in got), cycle
            if all(len(g) == n for g in got.values()):
                cycles["end"] = cycle
                return
        raise TimeoutError({k: len(g) for k, g in got.items()})

    simulate(dut, bench)
    for valid, want in beats.items():
        assert got[valid] == want, valid
    if p_valid == p_ready == 1.0:
        assert cycles["end"] == n, "one beat per cycle after one cycle of latency"
