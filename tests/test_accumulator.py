"""Accumulator in Amaranth's simulator: overwrite, accumulate-on-write, priorities, reads."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from llmchip.rtl.accumulator import Accumulator
from llmchip.sw import golden


@pytest.mark.parametrize("acc_width", [32, 16])
def test_random_writes_and_reads_match_model(acc_width, rng):
    lanes, rows = 3, 8
    dut = Accumulator(lanes, rows, acc_width)
    model = np.zeros((rows, lanes), dtype=np.int64)
    lo, hi = golden.int_range(acc_width)
    stats = {"same_row_back_to_back": 0, "l_waited": 0}

    async def bench(ctx):
        # Expected responses of the reads requested in the last READ_LATENCY cycles.
        expect = [None] * Accumulator.READ_LATENCY
        last_addr = None
        for _ in range(500):
            expect_read = expect.pop(0)
            if expect_read is not None:
                assert ctx.get(dut.r_resp.valid)
                assert list(ctx.get(dut.r_resp.payload)) == list(expect_read)
            else:
                assert not ctx.get(dut.r_resp.valid)
            # Hot rows make back-to-back accumulation into one row frequent.
            wv = rng.random() < 0.6
            wa = int(rng.integers(2)) if rng.random() < 0.5 else int(rng.integers(rows))
            wd = rng.integers(lo, hi + 1, size=lanes)
            wacc = rng.random() < 0.7
            lv, la = rng.random() < 0.4, int(rng.integers(rows))
            ld = rng.integers(lo, hi + 1, size=lanes)
            rv, ra = rng.random() < 0.5, int(rng.integers(rows))
            ctx.set(dut.w.valid, wv)
            ctx.set(dut.w.payload, {"addr": wa, "data": [int(v) for v in wd],
                                    "accumulate": int(wacc)})
            ctx.set(dut.l.valid, lv)
            ctx.set(dut.l.payload, {"addr": la, "data": [int(v) for v in ld], "accumulate": 0})
            ctx.set(dut.r_req.valid, rv)
            ctx.set(dut.r_req.payload, ra)
            l_ok = lv and ctx.get(dut.l.ready)
            assert l_ok == (lv and not wv), "loads wait only for the array's writes"
            stats["l_waited"] += lv and wv
            # Reads see writes accepted WRITE_LATENCY or more cycles earlier.
            expect.append(model_snapshot[ra].copy() if rv else None)
            await ctx.tick()
            # Apply the write that was accepted this cycle to the model for later cycles.
            if wv:
                stats["same_row_back_to_back"] += wa == last_addr and wacc
                model[wa] = golden.wrap(model[wa] + wd, acc_width) if wacc else wd
                last_addr = wa
            elif l_ok:
                model[la] = ld
                last_addr = la
            else:
                last_addr = None
            shift_snapshot()

    # The read port sees memory as written up to WRITE_LATENCY cycles before the request.
    history = [np.zeros((rows, lanes), dtype=np.int64)] * Accumulator.WRITE_LATENCY
    model_snapshot = history[0]

    def shift_snapshot():
        nonlocal model_snapshot
        history.append(model.copy())
        history.pop(0)
        model_snapshot = history[0]

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert stats["same_row_back_to_back"] > 10 and stats["l_waited"] > 10


def test_bad_parameters():
    with pytest.raises(ValueError, match="rows must be a power of two, not 6"):
        Accumulator(2, 6)
    with pytest.raises(ValueError, match="lanes must be an int >= 1, not 0"):
        Accumulator(0, 8)
