"""Scratchpad in Amaranth's simulator: banking, read latency, conflict priority."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from llmchip.rtl.scratchpad import Scratchpad


@pytest.mark.parametrize("banks", [1, 2, 4])
def test_random_traffic_matches_model(banks, rng):
    rows, width = 16, 3
    dut = Scratchpad(width, rows, banks)
    model = np.zeros((rows, width), dtype=np.int64)
    conflicts = {"n": 0}

    async def bench(ctx):
        # Expected responses of the requests accepted in the last READ_LATENCY cycles,
        # oldest first.
        pending = [{"a": None, "b": None}] * Scratchpad.READ_LATENCY
        for _ in range(400):
            # Responses for requests accepted READ_LATENCY cycles ago.
            due = pending.pop(0)
            for port, resp in (("a", dut.a_resp), ("b", dut.b_resp)):
                if due[port] is not None:
                    assert ctx.get(resp.valid)
                    assert list(ctx.get(resp.payload)) == list(due[port])
                else:
                    assert not ctx.get(resp.valid)
            wv = rng.random() < 0.5
            wa, wd = int(rng.integers(rows)), rng.integers(0, 256, size=width)
            av, aa = rng.random() < 0.6, int(rng.integers(rows))
            bv, ba = rng.random() < 0.6, int(rng.integers(rows))
            ctx.set(dut.w.valid, wv)
            ctx.set(dut.w.payload, {"addr": wa, "data": [int(v) for v in wd]})
            ctx.set(dut.a_req.valid, av)
            ctx.set(dut.a_req.payload, aa)
            ctx.set(dut.b_req.valid, bv)
            ctx.set(dut.b_req.payload, ba)
            a_ok = av and ctx.get(dut.a_req.ready)
            b_ok = bv and ctx.get(dut.b_req.ready)
            same_bank = (aa // (rows // banks)) == (ba // (rows // banks))
            assert a_ok == av, "port a never waits"
            assert b_ok == (bv and not (av and same_bank)), "port b waits only on a conflict"
            conflicts["n"] += bv and av and same_bank
            # Reads see the memory before this cycle's write (read-before-write).
            pending.append({"a": model[aa].copy() if a_ok else None,
                            "b": model[ba].copy() if b_ok else None})
            if wv:
                model[wa] = wd
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    if banks > 1:
        assert conflicts["n"] > 0


@pytest.mark.parametrize("kwargs, text", [
    ({"row_bytes": 0, "rows": 8}, "row_bytes must be an int >= 1, not 0"),
    ({"row_bytes": 4, "rows": 12}, "rows and banks must be powers of two"),
    ({"row_bytes": 4, "rows": 8, "banks": 16}, "banks <= rows"),
])
def test_bad_parameters(kwargs, text):
    with pytest.raises(ValueError, match=text):
        Scratchpad(**kwargs)
