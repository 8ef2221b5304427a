"""The DVFS controller RTL against the reference model: Amaranth simulation cycle by cycle,
and the generated Verilog under cocotb on Icarus and Verilator."""

from __future__ import annotations

import pytest

from llmchip.rtl.dvfs import DvfsController, DvfsPlatformModel
from llmchip.sw.dvfs import DvfsParams, Governor, normalize_writes, replay
from llmchip.tb.dvfs_replay import (
    build_dvfs,
    check_properties,
    dvfs_verilog,
    model_cycles,
    replay_rtl,
    rtl_cycles,
)
from llmchip.tb.toolchain import SIMULATORS

FAST = dict(sample_period=10, rate_limit=2, v_settle=2, pll_timeout=12, hot_dwell=8,
            sensor_timeout=12, pc_en=True, stuck_samples=5)
# Writable registers random writes may touch (controls, limits, trips, table, events).
WRITE_OFFSETS = (0x200, 0x204, 0x20C, 0x210, 0x214, 0x218, 0x21C, 0x220, 0x224, 0x230,
                 0x238, 0x258, 0x260, 0x2C0, 0x2C4, 0x2E8, 0x2EC)


def random_case(rng, n_rows=24, writes=True):
    temps = [30000, 50000, 79000, 81000, 84000, 86000, 88000, 90000, 93000, -45000]
    rows, cycle = [], 0
    for _ in range(n_rows):
        rows.append({"cycle": cycle,
                     "temperature_mC": int(rng.choice(temps, p=[.1, .2, .1, .1, .1, .1, .1,
                                                                .12, .03, .05])),
                     "temp_valid": int(rng.random() > 0.12),
                     "busy": int(rng.integers(0, 120)),
                     "total": int(rng.choice([0, 100, 100, 1000])),
                     "prochot": int(rng.random() < 0.06)})
        cycle += int(rng.integers(1, 90))
    ws = []
    if writes:
        for _ in range(6):
            value = int(rng.integers(0, 1 << 32)) if rng.random() < 0.3 else \
                int(rng.integers(0, 8))
            ws.append((int(rng.integers(0, cycle)), int(rng.choice(WRITE_OFFSETS)), value))
    taken = {c for c, _, _ in normalize_writes(ws)}
    reads = [(c, 0x200 + 4 * int(rng.integers(0, 64))) for c in range(0, cycle, 3)
             if c not in taken]
    return rows, ws, reads


def test_amaranth_matches_model_cycle_by_cycle(rng):
    """Every output of every cycle and every CSR read, over random traces, register
    writes and parameters (tick prescaler, governors, platform delays)."""
    for k in range(6):
        params = DvfsParams(**{**FAST, "tick_cycles": [1, 2, 3][k % 3],
                               "governor": Governor(k % 4)})
        rows, writes, reads = random_case(rng)
        delays = dict(v_delay=k % 4, lock_delay=(k + 1) % 5)
        got, got_reads = rtl_cycles(rows, params, writes, reads, **delays)
        want, want_reads = model_cycles(rows, params, writes, reads, **delays)
        assert len(got) == len(want) > 100
        for c, (g, w) in enumerate(zip(got, want, strict=True)):
            assert g == w, f"case {k}, cycle {c}: " + str(
                {f: (g[f], w[f]) for f in g if g[f] != w[f]})
        assert got_reads == want_reads and len(got_reads) > 30
        assert len({r["seq"] for r in got}) >= 3, "the trace moved no operating point"


def test_rtl_properties_on_random_traces(rng):
    """Properties 1-5 and 7 on the RTL's own outputs (no writes: bounds stay valid)."""
    seen = {"transitions": 0, "trips": 0, "faults": 0}
    for k in range(3):
        params = DvfsParams(**{**FAST, "governor": Governor(k)})
        rows, _, _ = random_case(rng, n_rows=30, writes=False)
        records, _ = rtl_cycles(rows, params, v_delay=3, lock_delay=3)
        for key, value in check_properties(records, rows, params, v_delay=3,
                                           lock_delay=3).items():
            if key in seen:
                seen[key] += value
    assert seen["transitions"] > 5


def test_rtl_components_reject_bad_params():
    with pytest.raises(TypeError, match="DvfsParams"):
        DvfsController({"n_opps": 6})
    with pytest.raises(ValueError, match="lock_delay"):
        DvfsPlatformModel(lock_delay=1 << 16)
    text = dvfs_verilog(DvfsParams(**FAST))
    assert "module llmchip_dvfs_system" in text and "csr_rdata" in text


@pytest.fixture(scope="module")
def cocotb_case():
    import numpy as np
    params = DvfsParams(**FAST)
    cases = [random_case(np.random.default_rng(s), n_rows=40)[:2] for s in (11, 12)]
    return params, cases


@pytest.mark.parametrize("sim", SIMULATORS)
def test_generated_verilog_replays_like_the_model(sim, cocotb_case):
    """The Verilog under cocotb returns exactly ``sw.dvfs.replay``'s rows."""
    params, cases = cocotb_case
    build = build_dvfs(params, sim, v_delay=3, lock_delay=3)
    for rows, writes in cases:
        want = replay(rows, params, writes, v_delay=3, lock_delay=3)
        got = replay_rtl(rows, params, writes, sim, v_delay=3, lock_delay=3, build=build)
        assert got == want
        assert len({r["index"] for r in got}) > 1
