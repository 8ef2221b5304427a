"""cocotb testbench that replays a DVFS trace on the generated controller (Icarus, Verilator).

Reads the job named by ``LLMCHIP_STIM`` (trace spans ``[start, end, temp_mc, temp_valid,
busy, total, prochot]`` and CSR writes ``[cycle, word address, value]``), drives the
inputs only when they change, lets the simulator run freely in between, samples the
outputs in the last cycle of every span, and writes the per-row results of
:func:`llmchip.sw.dvfs.replay` to ``LLMCHIP_RESULT``. Launched by
:func:`llmchip.tb.dvfs_replay.replay_rtl`.
"""

from __future__ import annotations

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge


@cocotb.test()
async def replay_trace(dut):
    """Replay the job's trace and record the outputs per row."""
    job = json.loads(open(os.environ["LLMCHIP_STIM"]).read())
    spans, writes = job["spans"], job["writes"]
    # cycle -> actions, applied before the outputs of that cycle are sampled
    actions: dict[int, list] = {}
    for k, (start, end, *_rest) in enumerate(spans):
        actions.setdefault(start, []).append(("inputs", k))
        actions.setdefault(end - 1, []).append(("sample", k))
    for cycle, addr, value in writes:
        actions.setdefault(cycle, []).append(("write", addr, value))
        actions.setdefault(cycle + 1, []).append(("write_end",))

    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    for name in ("temp_mc", "temp_valid", "busy", "total", "prochot_i", "csr_addr",
                 "csr_wdata", "csr_we", "csr_re"):
        getattr(dut, name).value = 0
    await ClockCycles(dut.clk, 2)
    await RisingEdge(dut.clk)
    dut.rst.value = 0
    cycle = 0
    rows = []
    en_before = 0
    for at in sorted(actions):
        if at > cycle:
            await ClockCycles(dut.clk, at - cycle)
            cycle = at
        samples = []
        for act in sorted(actions[at], key=lambda a: a[0] != "write_end"):
            if act[0] == "inputs":
                _, temp_mc, valid, busy, total, prochot = spans[act[1]][1:]
                dut.temp_mc.value = temp_mc & ((1 << len(dut.temp_mc)) - 1)
                dut.temp_valid.value = valid
                dut.busy.value = busy
                dut.total.value = total
                dut.prochot_i.value = prochot
            elif act[0] == "write":
                dut.csr_addr.value = act[1]
                dut.csr_wdata.value = act[2]
                dut.csr_we.value = 1
            elif act[0] == "write_end":
                dut.csr_we.value = 0
            else:
                samples.append(act[1])
        if samples:
            await ReadOnly()
            for k in samples:
                start, end = spans[k][0], spans[k][1]
                clk_en = int(dut.clk_en.value)
                en_total = int(dut.en_count.value) + clk_en
                rows.append({"cycle": start, "index": int(dut.index.value),
                             "v_req_mv": int(dut.v_req_mv.value),
                             "clk_en_ratio": (en_total - en_before) / (end - start),
                             "clk_en": clk_en, "reason": int(dut.reason.value),
                             "thermtrip": int(dut.thermtrip.value),
                             "irq": int(dut.irq.value)})
                en_before = en_total
    with open(os.environ["LLMCHIP_RESULT"], "w") as f:
        json.dump({"rows": rows}, f)
