"""cocotb testbench for the generated systolic array (Icarus and Verilator).

Reads the configuration from the ``params.json`` sidecar generated with the Verilog (named
by ``LLMCHIP_PARAMS``) and checks the DUT's port widths against it, reads its job from the
JSON file named by ``LLMCHIP_STIM`` (tiles, seed, idle probability), drives the stream
ports cycle by cycle, checks every output row against the NumPy golden model and the
latency formulas, and writes the accept/output cycles to the JSON file named by
``LLMCHIP_RESULT``. Launched by :mod:`llmchip.tb.sim`.
"""

from __future__ import annotations

import json
import os
import random
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from llmchip.config import AcceleratorConfig
from llmchip.tb.streams import check_run, make_stimulus, pack_lanes, unpack_lanes


@cocotb.test()
async def stream_tiles(dut):
    """Stream all tiles through the array and check every output row bit for bit."""
    job = json.loads(open(os.environ["LLMCHIP_STIM"]).read())
    params = json.loads(open(os.environ["LLMCHIP_PARAMS"]).read())
    cfg = AcceleratorConfig.from_dict(params)
    for port, bits in params["derived"]["port_widths"].items():
        got = len(getattr(dut, port).value)
        assert got == bits, f"{port} is {got} bits wide, params.json says {bits}"
    tiles = [(np.array(a, dtype=np.int64), np.array(b, dtype=np.int64))
             for a, b in job["tiles"]]
    st = make_stimulus(cfg, tiles)
    seed, valid_prob = job["seed"], job["valid_prob"]
    dut._log.info("config %s, %d tiles, seed=%d, valid_prob=%.2f (replay: LLMCHIP_SEED=%d)",
                  cfg, len(tiles), seed, valid_prob, seed)
    rng = random.Random(seed)
    max_cycles = job["max_cycles"]

    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    dut.a_in__valid.value = 0
    dut.w_in__valid.value = 0
    dut.a_in__payload.value = 0
    dut.w_in__payload.value = 0
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0

    R, C, iw, aw = cfg.rows, cfg.cols, cfg.in_width, cfg.acc_width
    a_words = [pack_lanes(b.lanes, iw, b.last) for b in st.a_beats]
    w_words = [pack_lanes(b.lanes, iw) for b in st.w_beats]
    a_cycles, w_cycles, outputs = [], [], []
    ai = wi = 0
    drain = None
    t0 = time.perf_counter()
    cycle = 0
    for cycle in range(max_cycles):
        await RisingEdge(dut.clk)
        a_offer = ai < len(a_words) and (valid_prob >= 1 or rng.random() < valid_prob)
        w_offer = wi < len(w_words) and (valid_prob >= 1 or rng.random() < valid_prob)
        dut.a_in__valid.value = int(a_offer)
        dut.w_in__valid.value = int(w_offer)
        if a_offer:
            dut.a_in__payload.value = a_words[ai]
        if w_offer:
            dut.w_in__payload.value = w_words[wi]
        await ReadOnly()
        if a_offer and int(dut.a_in__ready.value):
            a_cycles.append(cycle)
            ai += 1
        if w_offer and int(dut.w_in__ready.value):
            w_cycles.append(cycle)
            wi += 1
        if int(dut.y_out__valid.value):
            beat = unpack_lanes(int(dut.y_out__payload.value), C, aw, with_last=True)
            outputs.append((cycle, beat))
        if drain is None and ai == len(a_words) and len(outputs) >= len(st.expected):
            # Keep watching long enough to catch spurious extra rows.
            drain = cycle + cfg.latency + R + 2
        if drain is not None and cycle >= drain:
            break
    else:
        raise AssertionError(
            f"timeout after {max_cycles} cycles: {len(outputs)}/{len(st.expected)} rows out, "
            f"{ai}/{len(a_words)} a beats and {wi}/{len(w_words)} w beats accepted")
    wall = time.perf_counter() - t0

    with open(os.environ["LLMCHIP_RESULT"], "w") as f:
        json.dump({
            "a_cycles": a_cycles, "w_cycles": w_cycles,
            "outputs": [[c, list(b.lanes), b.last] for c, b in outputs],
            "cycles": cycle + 1, "wall_s": wall, "seed": seed,
        }, f)
    check_run(st, a_cycles, w_cycles, outputs)
    dut._log.info("%d rows bit-exact in %d cycles (%.0f cycles/s)", len(outputs), cycle + 1,
                  (cycle + 1) / max(wall, 1e-9))
