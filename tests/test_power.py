"""The power and thermal model: energy scaling, leakage, the RC plant, constants files."""

from __future__ import annotations

import json
import math

import pytest

from llmchip.config import AcceleratorConfig
from llmchip.sw.power import (
    OPERATING_POINTS,
    Activity,
    EnergyModel,
    PowerConstants,
    ThermalPlant,
    dynamic_power_w,
    energy_per_cycle_pj,
    estimate_energy,
    full_load_activity,
    leakage_power_w,
    opp_power_mw,
)

CFG = AcceleratorConfig(rows=16, cols=16, sp_rows=4096, param_rows=128)


def test_estimate_energy_components_and_v_squared():
    counters = {"macs": 1000, "dram_read_bytes": 64, "dram_write_bytes": 64, "cycles": 100,
                "sram_reads": 10, "acc_accesses": 5}
    e = estimate_energy(CFG, counters, mhz=800, mv=900)
    em = EnergyModel()
    assert e["parts_uj"]["mac"] == pytest.approx(1000 * 0.3e-6)
    assert e["parts_uj"]["dram"] == pytest.approx(128 / 8 * 1950e-6)
    # scratchpad: 10 rows of 16 bytes read plus 64 bytes filled by the DMA, 64 KiB SRAM
    sp = (10 * 16 + 64) / 8 * em.sram_pj(4096 * 16) * 1e-6
    assert e["parts_uj"]["scratchpad"] == pytest.approx(sp)
    assert e["seconds"] == pytest.approx(100 / 800e6)
    hi = estimate_energy(CFG, counters, mhz=800, mv=1100)
    assert hi["total_uj"] / e["total_uj"] == pytest.approx((1.1 / 0.9) ** 2)


def test_sram_energy_interpolates_in_log_size():
    em = EnergyModel()
    assert em.sram_pj(8 << 10) == 10.0 and em.sram_pj(32 << 10) == 20.0
    assert em.sram_pj(16 << 10) == pytest.approx(15.0)        # halfway in log2 size
    assert em.sram_pj(1 << 20) == 100.0
    assert em.sram_pj(1 << 10) == 10.0
    assert em.sram_pj(2 << 20) > 100.0


def test_dynamic_power_scales_with_f_and_v_squared():
    act = full_load_activity(CFG)
    p_lo = dynamic_power_w(CFG, act, 400, 825)
    p_hi = dynamic_power_w(CFG, act, 800, 1100)
    assert p_hi / p_lo == pytest.approx(2 * (1100 / 825) ** 2)
    # per cycle: MACs of every PE, DRAM beat dominant
    pj = energy_per_cycle_pj(CFG, act)
    assert pj > CFG.bus_bytes / 8 * 1950 > 256 * 0.3
    idle = dynamic_power_w(CFG, Activity(), 800, 900)
    assert idle == pytest.approx(CFG.pes * 0.1e-12 * 800e6)     # the clock network only
    with pytest.raises(ValueError, match="busy must be between 0 and 1, not 1.5"):
        dynamic_power_w(CFG, act, 800, 900, busy=1.5)


def test_leakage_doubles_every_19_kelvin_and_rises_with_voltage():
    c = PowerConstants()
    base = leakage_power_w(CFG, 900, 45.0)
    assert leakage_power_w(CFG, 900, 64.0) == pytest.approx(2 * base)
    assert leakage_power_w(CFG, 900, 45.0 + 3 * 19) == pytest.approx(8 * base)
    assert leakage_power_w(CFG, 1100, 45.0) == pytest.approx(base * (1.1 / 0.9) ** 3)
    # reference value: 0.5 mW per PE plus 0.05 mW per KiB of SRAM at 0.9 V and 45 C
    kib = (4096 * 16 + 512 * 16 * 4 + 128 * 16 * 8) / 1024
    assert base == pytest.approx((256 * 0.5 + kib * 0.05) * 1e-3)
    hot = c.replace(leak_doubling_k=10.0)
    assert leakage_power_w(CFG, 900, 55.0, hot) == pytest.approx(2 * base)


def test_opp_power_table_is_increasing_and_consistent():
    mw = opp_power_mw(CFG)
    assert len(mw) == len(OPERATING_POINTS)
    assert all(a < b for a, b in zip(mw, mw[1:], strict=False))
    f, v = OPERATING_POINTS[-1]
    want = dynamic_power_w(CFG, full_load_activity(CFG), f, v) + leakage_power_w(CFG, v, 85)
    assert mw[-1] == round(want * 1e3)
    assert opp_power_mw(CFG, temp_c=45)[-1] < mw[-1]


def test_plant_steady_state_is_power_times_r_total_plus_ambient():
    c = PowerConstants(ambient_c=40.0)
    plant = ThermalPlant(c)
    assert plant.steady_state(5.0) == pytest.approx((40 + 5 * 1.1, 40 + 5 * 0.1))
    # start from the sink's steady state: the die settles within a few die taus
    plant = ThermalPlant(c, die_c=40.0, sink_c=40.5)
    plant.step(5.0, 300)                            # 3 ms = 10 die time constants
    assert plant.die_c == pytest.approx(40.5 + 5.0, abs=0.02)
    assert plant.sink_c == pytest.approx(40.5, abs=1e-3)


def test_plant_die_time_constant_matches_analytic():
    c = PowerConstants(dt_s=1e-6)
    plant = ThermalPlant(c)
    p = 4.0
    # with the sink nearly fixed (its tau is 14 s), the die follows 1 - exp(-t / tau)
    n = round(c.die_tau_s / c.dt_s)
    plant.step(p, n)
    rise = plant.die_c - c.ambient_c
    assert rise / (p * c.die_r_k_per_w) == pytest.approx(1 - math.exp(-1), rel=0.01)
    # the sink's time constant: R * C = 14 s
    assert c.sink_tau_s == pytest.approx(14.0)


def test_plant_sink_time_constant_within_tolerance():
    c = PowerConstants(dt_s=25e-6)
    plant = ThermalPlant(c)
    p = 10.0
    plant.step(p, round(c.sink_tau_s / c.dt_s))       # one sink tau of 14 s
    frac = (plant.sink_c - c.ambient_c) / (p * c.sink_r_k_per_w)
    assert frac == pytest.approx(1 - math.exp(-1), rel=0.02)


def test_plant_euler_step_formula():
    c = PowerConstants(ambient_c=30.0)
    plant = ThermalPlant(c, die_c=50.0, sink_c=35.0)
    plant.step(2.0)
    q = (50.0 - 35.0) / c.die_r_k_per_w
    assert plant.die_c == pytest.approx(50.0 + c.dt_s / c.die_c_j_per_k * (2.0 - q))
    assert plant.sink_c == pytest.approx(
        35.0 + c.dt_s / c.sink_c_j_per_k * (q - (35.0 - 30.0) / c.sink_r_k_per_w))
    assert plant.t == pytest.approx(c.dt_s)


def test_plant_with_leakage_matches_plain_steps_and_reports_energy():
    c = PowerConstants()
    a, b = ThermalPlant(c, die_c=80.0, sink_c=60.0), ThermalPlant(c, die_c=80.0, sink_c=60.0)
    leak_ref = 0.5
    die, energy, peak, above = a.step_with_leakage(1.0, leak_ref, 20, above_c=75.0)
    total = 0.0
    for _ in range(20):
        p = 1.0 + leak_ref * 2 ** ((b.die_c - c.leak_t_ref_c) / c.leak_doubling_k)
        total += p * c.dt_s
        b.step(p)
    assert die == pytest.approx(b.die_c) and energy == pytest.approx(total)
    assert peak == pytest.approx(80.0)          # the die cools: the start is the peak
    assert 0 < above < 20 and b.die_c < 75.0


def test_constants_from_json_and_toml(tmp_path):
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"ambient_c": 60, "die_r_k_per_w": 2.0,
                             "sram_pj_per_64b": [[1024, 5], [65536, 30]]}))
    c = PowerConstants.from_file(j)
    assert c.ambient_c == 60 and c.die_r_k_per_w == 2.0
    assert c.die_c_j_per_k == pytest.approx(0.3e-3 / 2.0)
    assert c.sram_pj_per_64b == ((1024, 5), (65536, 30))
    t = tmp_path / "c.toml"
    t.write_text("ambient_c = 25.0\nleak_doubling_k = 20\n")
    c = PowerConstants.from_file(t)
    assert (c.ambient_c, c.leak_doubling_k, c.sink_c_j_per_k) == (25.0, 20, 140.0)
    assert PowerConstants.from_dict(c.to_dict()) == c


@pytest.mark.parametrize("text, suffix, match", [
    ('{"ambient": 50}', "json", "unknown power constant 'ambient'"),
    ('{"ambient_c": "hot"}', "json", "ambient_c must be a number, not str 'hot'"),
    ('{"die_tau_s": -1}', "json", "die_tau_s must be a finite number > 0, not -1"),
    ('{"dt_s": 0.001}', "json", "dt_s must be at most a tenth of die_tau_s"),
    ('{"ambient_c": 50', "json", "not valid JSON"),
    ("ambient_c = ", "toml", "not valid TOML"),
    ("[1, 2]", "json", "must be a table of name = value"),
    ('{"sram_pj_per_64b": [[2048, 5], [1024, 6]]}', "json", "sizes must be increasing"),
    ("ambient_c: 5", "yaml", "must end in .json or .toml"),
])
def test_constants_file_errors_name_the_value(tmp_path, text, suffix, match):
    p = tmp_path / f"bad.{suffix}"
    p.write_text(text)
    with pytest.raises(ValueError, match=match):
        PowerConstants.from_file(p)


def test_activity_validation():
    with pytest.raises(ValueError, match="activity macs must be a finite number >= 0, not -1"):
        Activity(macs=-1)
    with pytest.raises(ValueError, match="dram_read_share must be at most 1"):
        Activity(dram_read_share=2.0)
    a = Activity(macs=2, dram_bytes=8, dram_read_share=0.25)
    assert a.counters(10) == {"macs": 20, "sram_reads": 0.0, "acc_accesses": 0.0,
                              "dram_read_bytes": 20.0, "dram_write_bytes": 60.0,
                              "cycles": 10}
