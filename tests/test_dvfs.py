"""The DVFS reference model: parameters, control laws, error paths and properties 1-10."""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmchip.sw import regs
from llmchip.sw.dvfs import (
    DEFAULT_OPPS,
    P_MAX_MW,
    DvfsInputs,
    DvfsModel,
    DvfsParams,
    Governor,
    PlatformModel,
    Reason,
    SeqState,
    dvfs_registers,
    normalize_writes,
    read_trace,
    replay,
    write_trace,
)
from llmchip.tb.dvfs_replay import check_properties, model_cycles, rtl_cycles

# Small times so that every law acts within a few hundred cycles.
FAST = dict(sample_period=10, rate_limit=2, v_settle=2, pll_timeout=20, hot_dwell=8,
            sensor_timeout=12)
EV = regs.DVFS_EVENT_BITS


class Rig:
    """A model plus its platform, stepped together."""

    def __init__(self, **kw):
        self.p = DvfsParams(**{**FAST, **kw})
        self.m = DvfsModel(self.p)
        self.plat = PlatformModel(self.p, v_delay=2, lock_delay=2)
        self.log = []

    def run(self, n, **inputs):
        out = None
        for _ in range(n):
            i = DvfsInputs(**inputs, pll_lock=self.plat.pll_lock, v_ack=self.plat.v_ack)
            out = self.m.step(i)
            self.log.append((out, self.plat.mv))
            self.plat.step(out)
        return out

    @property
    def s(self):
        return self.m.state


def _full(rig, n=300, **kw):
    return rig.run(n, **{"temp_mc": 50000, "busy": 100, "total": 100, **kw})


# -- parameters, registers, traces -------------------------------------------------------

def test_default_opps_follow_the_power_law():
    assert [o[:2] for o in DEFAULT_OPPS] == [(200, 800), (297, 800), (400, 825), (500, 875),
                                             (600, 925), (800, 1100)]
    for mhz, mv, mw in DEFAULT_OPPS:
        assert mw == round(P_MAX_MW * mhz / 800 * (mv / 1100) ** 2)
    assert DEFAULT_OPPS[-1][2] == P_MAX_MW


@pytest.mark.parametrize("kw, name, exc", [
    ({"opps": ((200, 800, 1),)}, "len(opps)", ValueError),
    ({"opps": ((200, 800, 1), (100, 900, 2))}, "MHz must increase", ValueError),
    ({"opps": ((200, 900, 1), (300, 800, 2))}, "mV must not decrease", ValueError),
    ({"opps": ((200, 800, 1), (300, 900))}, "opps[1]", TypeError),
    ({"opps": ((200, 800, 1), (300, 900, 70000))}, "opps[1] mW", ValueError),
    ({"tick_cycles": 0}, "tick_cycles", ValueError),
    ({"tick_cycles": 1.5}, "tick_cycles", TypeError),
    ({"pmax": 6}, "pmax", ValueError),
    ({"down_threshold": 90}, "down_threshold", ValueError),
    ({"sample_period": 0}, "sample_period", ValueError),
    ({"t_hot": 95000}, "t_hot", ValueError),
    ({"t_passive": 93000}, "t_passive", ValueError),
    ({"sensor_min": 200000}, "sensor_min", ValueError),
    ({"t_crit": 1 << 20}, "t_crit", ValueError),
    ({"kp_po": -1}, "kp_po", ValueError),
    ({"governor": 7}, "governor", ValueError),
    ({"pc_en": 1}, "pc_en", TypeError),
    ({"integ_max": 1 << 24}, "integ_max", ValueError),
    ({"mod_duty": 16}, "mod_duty", ValueError),
])
def test_bad_params_name_the_value(kw, name, exc):
    with pytest.raises(exc, match=name.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        DvfsParams(**kw)


def test_register_map_matches_default_params():
    resets = DvfsParams().csr_reset()
    names = {r.name for r in dvfs_registers()}
    assert set(resets) <= names
    for r in dvfs_registers():
        assert regs.DVFS_BASE <= r.offset <= 0x2FC
        if r.name in resets:
            assert r.access is regs.Access.RW
            assert r.reset == resets[r.name], r.name
    assert regs.by_name("DVFS_EVENTS").access is regs.Access.RW1C
    assert {f.name for f in regs.by_name("IRQ_STATUS").fields} >= {"dvfs"}
    dvfs_bit = {f.name: f.lsb for f in regs.by_name("IRQ_STATUS").fields}["dvfs"]
    assert regs.IRQ_DVFS == 1 << dvfs_bit


def test_csr_port_errors_name_the_value():
    m = DvfsModel()
    with pytest.raises(ValueError, match="offset"):
        m.csr_write(0x100, 1)
    with pytest.raises(ValueError, match="multiple of 4"):
        m.csr_read(0x202)
    with pytest.raises(ValueError, match="value"):
        m.csr_write(0x200, 1 << 32)
    with pytest.raises(TypeError, match="params"):
        DvfsModel("fast")
    with pytest.raises(ValueError, match="v_delay"):
        PlatformModel(v_delay=-1)
    with pytest.raises(ValueError, match="n"):
        m.advance(DvfsInputs(), 0)


def test_trace_roundtrip_and_errors(tmp_path):
    rows = [{"cycle": 0, "temperature_mC": 50000, "temp_valid": 1, "busy": 5, "total": 10,
             "prochot": 0},
            {"cycle": 40, "temperature_mC": -1000, "temp_valid": 0, "busy": 0, "total": 10,
             "prochot": 1}]
    path = write_trace(tmp_path / "t.csv", rows)
    assert read_trace(path) == rows
    assert replay(path, DvfsParams(**FAST)) == replay(rows, DvfsParams(**FAST))
    (tmp_path / "bad.csv").write_text("cycle,temperature_mC\n0,1\n")
    with pytest.raises(ValueError, match="lacks"):
        read_trace(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="increase"):
        write_trace(tmp_path / "x.csv", [rows[0], rows[1], rows[1]])
    with pytest.raises(ValueError, match="cycle 0"):
        replay([rows[1]])
    with pytest.raises(ValueError, match="offset"):
        normalize_writes([(0, 0x40, 1)])
    assert normalize_writes([(5, 0x200, 1), (5, 0x204, 1), (2, 0x214, 3)]) == [
        (2, 0x214, 3), (5, 0x200, 1), (6, 0x204, 1)]


def test_replay_row_results():
    rows = [{"cycle": 0, "temperature_mC": 50000, "temp_valid": 1, "busy": 100,
             "total": 100, "prochot": 0},
            {"cycle": 400, "temperature_mC": 95000, "temp_valid": 1, "busy": 100,
             "total": 100, "prochot": 0}]
    out = replay(rows, DvfsParams(**FAST))
    assert [r["cycle"] for r in out] == [0, 400]
    assert out[0]["index"] == 5 and out[0]["v_req_mv"] == 1100 and out[0]["reason"] == 0
    assert 0.5 < out[0]["clk_en_ratio"] < 1
    assert out[1]["thermtrip"] == 1 and out[1]["clk_en"] == 0
    assert out[1]["reason"] == Reason.CRITICAL and out[1]["irq"] == 1


def test_advance_equals_steps(rng):
    for tick_cycles in (1, 3):
        p = DvfsParams(**{**FAST, "tick_cycles": tick_cycles, "pc_en": True})
        a, b = DvfsModel(p), DvfsModel(p)
        for _ in range(60):
            i = DvfsInputs(temp_mc=int(rng.choice([50000, 86000, 90000])),
                           temp_valid=bool(rng.random() > 0.2), busy=int(rng.integers(0, 100)),
                           total=100, prochot_i=bool(rng.random() < 0.05))
            n = int(rng.integers(1, 400))
            oa = a.advance(i, n)
            for _ in range(n):
                ob = b.step(i)
            assert oa == ob
            assert a.state == b.state and a.state.en_cycles == b.state.en_cycles
    # long idle stretches are skipped, not stepped
    m = DvfsModel(DvfsParams(sample_period=1000, tick_cycles=100))
    m.advance(DvfsInputs(busy=0, total=100), 10_000_000)
    assert m.state.cycle == 10_000_000


# -- control laws -----------------------------------------------------------------------

@pytest.mark.parametrize("gov, load, expect", [
    (Governor.ONDEMAND, 100, 5), (Governor.ONDEMAND, 81, 5), (Governor.ONDEMAND, 66, 4),
    (Governor.ONDEMAND, 0, 0), (Governor.ONDEMAND, 33, 2),
    (Governor.SCHEDUTIL, 0, 0), (Governor.SCHEDUTIL, 50, 3), (Governor.SCHEDUTIL, 80, 5),
    (Governor.SCHEDUTIL, 59, 4), (Governor.PERFORMANCE, 0, 5)])
def test_utilization_governors(gov, load, expect):
    rig = Rig(governor=gov)
    out = rig.run(200, temp_mc=50000, busy=load, total=100)
    assert rig.s.load == load and rig.s.gov == expect
    assert out.index == expect and out.f_index == expect
    # ondemand: fmin + load (fmax - fmin) / 100 -> the lowest point at or above it
    if gov == Governor.ONDEMAND and load <= 80:
        need = 200 + load * 6
        assert [o[0] for o in DEFAULT_OPPS][expect] >= need
        assert expect == 0 or DEFAULT_OPPS[expect - 1][0] < need


def test_conservative_steps_one_point_per_sample():
    rig = Rig(governor=Governor.CONSERVATIVE, rate_limit=0)
    seen = []
    for _ in range(8):
        rig.run(10, temp_mc=50000, busy=90, total=100)
        seen.append(rig.s.gov)
    assert seen == [0, 1, 2, 3, 4, 5, 5, 5]
    rig.run(30, temp_mc=50000, busy=50, total=100)
    assert rig.s.gov == 5
    rig.run(20, temp_mc=50000, busy=10, total=100)
    assert rig.s.gov in (3, 4)


def test_load_division_and_zero_total():
    rig = Rig()
    rig.run(30, busy=7, total=9)
    assert rig.s.load == 700 // 9
    rig.run(30, busy=50, total=0)
    assert rig.s.load == 0
    rig.run(30, busy=500, total=100)  # busy is clamped to total
    assert rig.s.load == 100


def test_step_wise_cap_with_hysteresis():
    rig = Rig(governor=Governor.PERFORMANCE, t_passive=85000, t_passive_hyst=2000)
    _full(rig, 100)
    assert rig.s.step_cap == 5
    caps = []
    for t in range(85000, 85800, 100):  # rising above the trip: one step down per sample
        rig.run(10, temp_mc=t, busy=100, total=100)
        caps.append(rig.s.step_cap)
    assert caps == [4, 3, 2, 1, 0, 0, 0, 0]
    rig.run(50, temp_mc=85700, busy=100, total=100)  # constant: no change
    assert rig.s.step_cap == 0
    rig.run(50, temp_mc=84000, busy=100, total=100)  # below trip, above trip - hyst
    assert rig.s.step_cap == 0 and rig.s.reason == Reason.THERMAL
    rig.run(10, temp_mc=82900, busy=100, total=100)
    assert rig.s.step_cap == 1
    rig.run(60, temp_mc=82900, busy=100, total=100)
    assert rig.s.step_cap == 5


def test_pid_power_cap_anti_windup_and_clamp():
    rig = Rig(pc_en=True, governor=Governor.PERFORMANCE, t_control=80000, cutoff=3000,
              integ_max=5000, kp_po=4096, kp_pu=1024, ki=2048, kd=0, p_sustain=1500)
    rig.run(20, temp_mc=90000, busy=100, total=100)  # far above: no integration
    assert rig.s.integ == 0
    # e = -10000: budget = 1500 - 10000 (kp_po = 1.0) < 0 -> 0 -> lowest point
    assert rig.s.budget == 0 and rig.s.pc_cap == 0
    rig.run(200, temp_mc=79000, busy=100, total=100)  # e = +1000, inside the band
    assert rig.s.integ == 5000  # clamped
    assert rig.s.budget == min(DEFAULT_OPPS[-1][2], 1500 + 1000 // 4 + 5000 // 2)
    assert rig.s.pc_cap == 5
    rig.run(10, temp_mc=81000, busy=100, total=100)  # e = -1000: kp_po
    assert rig.s.integ == 4000
    assert rig.s.budget == 1500 - 1000 + 4000 // 2
    assert rig.s.pc_cap == 4  # 2121 mW fits 2500 mW, 4000 does not
    rig.run(20, temp_mc=81000, busy=10, total=100)  # low load: all points fit
    assert rig.s.pc_cap == 5
    rig.m.csr_write(0x200, 3)  # power cap off: integrator cleared, cap released
    rig.run(30, temp_mc=81000, busy=100, total=100)
    assert rig.s.integ == 0 and rig.s.pc_cap == 5 and rig.s.budget == DEFAULT_OPPS[-1][2]


def test_hot_prochot_modulation_and_dwell():
    rig = Rig(governor=Governor.PERFORMANCE, hot_dwell=8, t_hot=89000, t_hot_hyst=3000)
    _full(rig, 200)
    assert rig.s.index == 5
    out = rig.run(1, temp_mc=50000, busy=100, total=100, prochot_i=True)
    out = rig.run(2, temp_mc=50000, busy=100, total=100, prochot_i=False)
    assert out.prochot_o and out.target == 0 and out.reason == Reason.HOT
    out = rig.run(60, temp_mc=89000, busy=100, total=100)
    assert out.index == 0 and out.modulating and out.duty == 8
    on = sum(o.clk_en for o, _ in rig.log[-32:])
    assert on == 32 * 200 * 8 // 16 // 800  # 1/4 f/fmax times 50% duty
    rig.run(50, temp_mc=86500, busy=100, total=100)  # below t_hot, above t_hot - hyst
    assert rig.s.hot
    rig.run(9, temp_mc=80000, busy=100, total=100)  # dwell not yet over
    assert rig.s.hot
    rig.run(3, temp_mc=80000, busy=100, total=100)
    assert not rig.s.hot
    rig.run(300, temp_mc=80000, busy=100, total=100)
    assert rig.s.index == 5 and rig.s.events & 1 << EV["hot"]


def test_critical_trip_is_latched():
    rig = Rig()
    _full(rig, 100)
    rig.run(1, temp_mc=92000, busy=100, total=100)
    out = rig.run(2, temp_mc=50000, busy=100, total=100)
    assert out.thermtrip and not out.clk_en  # within two cycles
    out = rig.run(1, temp_mc=50000, busy=100, total=100)
    assert out.thermtrip and not out.clk_en and out.irq and out.reason == Reason.CRITICAL
    rig.m.csr_write(0x20C, 0x3F)
    out = rig.run(300, temp_mc=30000, busy=100, total=100)
    assert out.thermtrip and not out.clk_en and out.index == 0
    assert not out.irq


@pytest.mark.parametrize("kind", ["timeout", "range", "stuck"])
def test_sensor_fault_fails_safe(kind):
    rig = Rig(governor=Governor.PERFORMANCE, stuck_samples=5 if kind == "stuck" else 0)
    for k in range(20):  # a moving temperature: no stuck fault
        rig.run(10, temp_mc=50000 + k, busy=100, total=100)
    assert rig.s.index == 5 and not rig.m._fault(rig.s, rig.m._c)
    if kind == "timeout":
        out = rig.run(12, temp_mc=0, temp_valid=False, busy=100, total=100)
        assert not out.sensor_fault
        out = rig.run(2, temp_mc=0, temp_valid=False, busy=100, total=100)
    elif kind == "range":
        out = rig.run(2, temp_mc=-45000, busy=100, total=100)
    else:
        out = rig.run(60, temp_mc=50000, busy=100, total=100)
    assert out.sensor_fault
    out = rig.run(60, temp_mc=50000 if kind != "stuck" else 50000, temp_valid=kind == "stuck"
                  or kind == "range", busy=100, total=100)
    if kind == "range":  # recovers once readings are plausible again
        assert not out.sensor_fault and rig.s.events & 1 << EV["sensor_fault"]
    else:
        assert out.sensor_fault and out.index == 0 and out.reason == Reason.SENSOR_FAULT
        assert out.irq


def test_arbitration_pmin_pmax_and_reasons():
    rig = Rig(governor=Governor.ONDEMAND)
    out = rig.run(100, temp_mc=50000, busy=0, total=100)
    assert out.index == 0 and out.reason == Reason.IDLE
    rig.m.csr_write(0x214, 2)  # pmin
    out = rig.run(100, temp_mc=50000, busy=0, total=100)
    assert out.index == 2
    rig.m.csr_write(0x218, 3)  # pmax
    out = rig.run(100, temp_mc=50000, busy=100, total=100)
    assert out.index == 3 and out.reason == Reason.HOST
    rig.m.csr_write(0x214, 5)  # pmin above pmax: pmax wins
    out = rig.run(100, temp_mc=50000, busy=0, total=100)
    assert out.index == 3
    out = rig.run(3, temp_mc=50000, busy=0, total=100, prochot_i=True)  # thermal beats pmin
    out = rig.run(100, temp_mc=50000, busy=0, total=100, prochot_i=True)
    assert out.index == 0 and out.reason == Reason.HOT


def test_down_at_once_up_waits_for_a_sample():
    rig = Rig(governor=Governor.PERFORMANCE, sample_period=50)
    _full(rig, 400)
    assert rig.s.target == 5
    rig.run(1, temp_mc=50000, busy=100, total=100, prochot_i=True)
    rig.run(1, temp_mc=50000, busy=100, total=100)
    assert rig.s.target == 0  # at once
    rig.m.csr_write(0x23C, 0)  # no dwell
    ups = []
    for _ in range(60):
        rig.run(1, temp_mc=50000, busy=100, total=100)
        ups.append((rig.s.target, rig.s.ph))
    first = next(k for k, (t, _) in enumerate(ups) if t)
    assert ups[first - 1][1] == 9  # rose at the end of an apply phase only


def test_sequencer_order_and_pll_timeout():
    rig = Rig(governor=Governor.PERFORMANCE, v_settle=3)
    _full(rig, 300)
    outs = [o for o, _ in rig.log]
    ups = [k for k in range(1, len(outs)) if outs[k].f_index > outs[k - 1].f_index]
    assert ups
    for k in ups:  # frequency rose only after v_ack raised the voltage
        assert rig.log[k][1] >= DEFAULT_OPPS[outs[k].f_index][1]
        assert not outs[k].clk_en
    rig.log.clear()
    rig.run(200, temp_mc=50000, busy=0, total=100)
    outs = [o for o, _ in rig.log]
    downs = [k for k in range(1, len(outs)) if outs[k].v_req_mv < outs[k - 1].v_req_mv]
    for k in downs:  # voltage fell only after the frequency had settled
        assert outs[k].f_index <= outs[k].index or outs[k].seq == SeqState.V_WAIT
        assert DEFAULT_OPPS[outs[k].f_index][1] <= outs[k].v_req_mv
    # a PLL that never locks: timeout event, clock stays off (pll_lock low)
    m = DvfsModel(DvfsParams(**{**FAST, "governor": Governor.PERFORMANCE}))
    plat = PlatformModel(m.params, v_delay=1)
    for _ in range(400):
        # a PLL that loses lock for good after the first frequency change
        lock = plat.pll_lock and m.state.f_index == 0
        out = m.step(DvfsInputs(busy=100, total=100, pll_lock=lock, v_ack=plat.v_ack))
        plat.step(out)
        assert not (out.clk_en and m.state.seq == SeqState.F_WAIT)
    assert m.state.events & 1 << EV["pll_timeout"]


def test_events_w1c_irq_enable_and_counters():
    rig = Rig(governor=Governor.PERFORMANCE)
    _full(rig, 200)
    assert rig.s.transitions >= 1 and rig.s.events & 1 << EV["transition"]
    out = rig.run(1)
    assert not out.irq  # transition events are not enabled by default
    rig.m.csr_write(0x210, 1 << EV["transition"])
    out = rig.run(2, temp_mc=50000, busy=100, total=100)
    assert out.irq
    rig.m.csr_write(0x20C, 1 << EV["transition"])
    out = rig.run(2, temp_mc=50000, busy=100, total=100)
    assert not out.irq and not rig.m.csr_read(0x20C) & 1 << EV["transition"]
    rig.run(100, temp_mc=50000, busy=100, total=100, prochot_i=True)
    assert rig.m.csr_read(0x288) == 1 and rig.m.csr_read(0x28C) >= 95
    status = rig.m.csr_read(0x208)
    assert status >> 16 & 15 == Reason.HOT and status >> 20 & 1


def test_lock_freezes_safety_registers():
    m = DvfsModel(DvfsParams(**FAST))
    m.csr_write(0x238, 60000)
    m.csr_write(0x204, 1)
    for off in (0x238, 0x218, 0x240, 0x2C0, 0x2C4, 0x254):
        m.csr_write(off, 123)
    m.csr_write(0x214, 1)  # pmin is not locked
    m.csr_write(0x204, 0)  # cannot unlock
    for _ in range(12):
        m.step(DvfsInputs())
    assert m.csr_read(0x238) == 60000 and m.csr_read(0x218) == 5
    assert m.csr_read(0x2C0) == 200 | 800 << 12 and m.csr_read(0x204) == 1
    assert m.csr_read(0x214) == 1
    assert m.csr_read(0x2F8) == 0  # beyond the table


# -- properties over random traces ------------------------------------------------------

@st.composite
def traces(draw):
    rows, cycle = [], 0
    temp = draw(st.integers(40000, 80000))
    for _ in range(draw(st.integers(3, 14))):
        kind = draw(st.sampled_from(["ramp", "step", "drop", "hold", "prochot"]))
        temp = {"ramp": temp + draw(st.integers(-3000, 3000)),
                "step": draw(st.integers(30000, 95000)),
                }.get(kind, temp)
        rows.append({"cycle": cycle, "temperature_mC": temp,
                     "temp_valid": int(kind != "drop"), "busy": draw(st.integers(0, 100)),
                     "total": 100, "prochot": int(kind == "prochot")})
        cycle += draw(st.integers(1, 150))
    return rows


PROP_PARAMS = DvfsParams(**{**FAST, "pc_en": True, "stuck_samples": 6})


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(trace=traces(), gov=st.sampled_from(list(Governor)),
       writes=st.lists(st.tuples(st.integers(0, 800),
                                 st.sampled_from([0x200, 0x204, 0x20C, 0x214, 0x218, 0x238,
                                                  0x2C0, 0x210]),
                                 st.integers(0, 0xFFFF)), max_size=4))
def test_properties_on_random_traces(trace, gov, writes):
    """Properties 1-5, 7, 8 and 9 on random traces; locked writes never land."""
    params = DvfsParams(**{**FAST, "pc_en": True, "stuck_samples": 6, "governor": gov})
    safe = [w for w in writes if w[1] not in (0x238, 0x2C0)]  # keep the table and trips
    records, _ = model_cycles(trace, params, safe)
    check_properties(records, trace, params, v_delay=5, lock_delay=5)
    # 8 and 9 need the registers: replay again with the model in hand
    m = DvfsModel(params)
    plat = PlatformModel(params)
    m.csr_write(0x204, 1)
    for _, off, value in normalize_writes(writes):
        m.csr_write(off, value)
    prev = copy.copy(m.state)
    for row in trace:
        for _ in range(60):
            out = m.step(DvfsInputs(temp_mc=row["temperature_mC"],
                                    temp_valid=bool(row["temp_valid"]), busy=row["busy"],
                                    total=100, prochot_i=bool(row["prochot"]),
                                    pll_lock=plat.pll_lock, v_ack=plat.v_ack))
            plat.step(out)
            s = m.state
            assert abs(s.integ) <= params.integ_max
            assert 0 <= s.budget <= params.opps[-1][2]
            caps = min(prev.step_cap, prev.pc_cap, min(m._c.pmax, params.n_opps - 1))
            if prev.hot or prev.tripped or m._fault(prev, m._c):
                caps = 0
            assert s.target <= caps and 0 <= s.index < params.n_opps  # property 5
            prev = copy.copy(s)
            assert m.csr_read(0x238) == params.t_crit & 0xFFFFF
            assert m.csr_read(0x2C0) == 200 | 800 << 12


@settings(max_examples=15, deadline=None, derandomize=True)
@given(temp=st.integers(60000, 95000), load=st.integers(0, 100),
       gov=st.sampled_from(list(Governor)))
def test_constant_temperature_settles(temp, load, gov):
    """Property 6: at constant T the transitions stop; caps never rise while T >= trip and
    rising, and never before T < trip - hyst."""
    params = DvfsParams(**{**FAST, "governor": gov, "pc_en": True})
    m = DvfsModel(params)
    plat = PlatformModel(params)
    prev = None
    for k in range(3000):
        t = min(temp, 50000 + 50 * k)  # ramp up to temp, then hold
        out = m.step(DvfsInputs(temp_mc=t, busy=load, total=100, pll_lock=plat.pll_lock,
                                v_ack=plat.v_ack))
        plat.step(out)
        s = m.state
        if prev is not None and s.step_cap > prev.step_cap:
            threshold = params.t_passive - params.t_passive_hyst if prev.crossed \
                else params.t_passive
            assert prev.temp < threshold and prev.temp <= prev.t_prev
        if prev is not None and s.step_cap < prev.step_cap:
            assert prev.temp > prev.t_prev
        if k == 2000:
            transitions = s.transitions
        prev = copy.copy(s)
    assert m.state.transitions == transitions, "still oscillating at constant temperature"


@pytest.mark.parametrize("gov", list(Governor))
def test_full_load_reaches_the_top(gov):
    """Property 10: with no caps and full load the top point is reached within a bounded
    number of samples (the conservative governor needs one per point)."""
    params = DvfsParams(**{**FAST, "governor": gov})
    rig = Rig(**{**FAST, "governor": gov})
    bound = (params.n_opps + 1) * params.sample_period + params.n_opps * 40
    for _ in range(bound):
        out = rig.run(1, temp_mc=50000, busy=100, total=100)
        if out.index == params.n_opps - 1 and out.f_index == params.n_opps - 1:
            break
    else:
        raise AssertionError(f"{gov.name}: not at the top after {bound} cycles")


# -- an upward transition overtaken by a lower target ------------------------------------

#: Full load at 50 C with the performance governor: the first sample starts an upward
#: transition to the top; a long rate limit makes any wait for it visible.
ABORT = DvfsParams(**{**FAST, "governor": Governor.PERFORMANCE, "rate_limit": 40,
                      "v_settle": 4})
_ROW = {"temperature_mC": 50000, "temp_valid": 1, "busy": 100, "total": 100, "prochot": 0}
_END = 400
_PMAX = 0x218


def _abort_trace(prochot_at=None):
    rows = [{"cycle": 0, **_ROW}]
    if prochot_at is not None:
        rows += [{"cycle": prochot_at, **_ROW, "prochot": 1},
                 {"cycle": prochot_at + 1, **_ROW}]
    return rows + [{"cycle": _END, **_ROW}]


def _cycles(trace, writes=(), rtl=False):
    run = rtl_cycles if rtl else model_cycles
    return run(trace, ABORT, writes, v_delay=2, lock_delay=2)[0]


def _raising(records, after=0):
    """Return the cycles in which an event (an input, or a write that lands at the end of
    the cycle) reaches the first upward transition starting after ``after`` while it
    raises the voltage, and the point that transition started from.

    The event is seen one cycle later (registered), so the last V_SETTLE cycle, which
    decides the rise, is too late for it.
    """
    start = next(c for c in range(max(after, 1), len(records))
                 if records[c - 1]["seq"] == SeqState.IDLE
                 and records[c]["seq"] == SeqState.V_WAIT)
    end = start
    while records[end]["seq"] in (SeqState.V_WAIT, SeqState.V_SETTLE):
        end += 1
    assert records[end]["seq"] == SeqState.F_WAIT and records[end]["f_index"] > \
        records[start]["index"]
    return range(start, end - 1), records[start]["index"]


# (case, writes before the transition, write or PROCHOT during it)
_ABORT_CASES = [("prochot_from_0", (), "prochot"),
                ("prochot_from_2", ((0, _PMAX, 2), (150, _PMAX, 5)), "prochot"),
                ("pmax_drop_from_0", (), (_PMAX, 3))]


def _abort_runs(case, rtl=False):
    """Yield ``(cycle of the event, starting point, model records[, RTL records])`` for the
    event in every cycle of the voltage-raising window (both states)."""
    _, writes, event = next(c for c in _ABORT_CASES if c[0] == case)
    window, f0 = _raising(_cycles(_abort_trace(), writes), after=max((w[0] for w in writes),
                                                                     default=0))
    assert len(window) >= 7, window  # both states last several cycles
    # The RTL runs the first, a middle and the last cycle (the formal counterexample's).
    for p in (window[0], window[len(window) // 2], window[-1]) if rtl else window:
        if event == "prochot":
            trace, ws = _abort_trace(p), writes
        else:
            trace, ws = _abort_trace(), (*writes, (p, *event))
        want = _cycles(trace, ws)
        yield p, f0, want, (_cycles(trace, ws, rtl=True) if rtl else None)


@pytest.mark.parametrize("case", ["prochot_from_0", "prochot_from_2"])
def test_prochot_while_raising_the_voltage_aborts(case):
    """The formal counterexample: PROCHOT while an upward transition raises the voltage
    (in V_WAIT or V_SETTLE) must not let the frequency rise; with a point above the
    lowest in effect, the downward transition starts at once, not after the rate limit."""
    for p, f0, rec, _ in _abort_runs(case):
        assert f0 == (2 if case.endswith("2") else 0)
        hot = [c for c in range(p, _END) if rec[c]["prochot_o"]]
        assert hot[0] == p + 1 and len(hot) > 5
        for c in range(p, _END):
            r = rec[c]
            assert r["f_index"] <= max(r["target"], f0), (p, c, r)
            if r["prochot_o"]:
                assert r["f_index"] <= (0 if c >= p + 3 else f0), (p, c, r)
        down = next(c for c in range(p, _END) if rec[c]["f_index"] == 0)
        assert down <= p + 3, (p, down)  # hot at p + 1, aborted, down the cycle after
        # No transition completed in the aborted one: index unchanged until it ends.
        assert all(rec[c]["index"] == f0 for c in range(p, down + 1))
        check_properties(rec, _abort_trace(p), ABORT, v_delay=2, lock_delay=2)


def test_lower_target_while_raising_the_voltage_limits_the_rise():
    """A target that falls but stays above the frequency (DVFS_PMAX lowered to 3 during an
    upward transition to 5) raises the frequency only to the new target."""
    for p, f0, rec, _ in _abort_runs("pmax_drop_from_0"):
        assert f0 == 0
        assert max(r["f_index"] for r in rec) == 3, p
        assert all(r["f_index"] <= r["target"] for r in rec[p:]), p
        assert rec[-1]["index"] == rec[-1]["f_index"] == 3
        # the voltage raised for point 5 is safe for point 3
        assert all(ABORT.opps[r["f_index"]][1] <= r["mv"] for r in rec)


@pytest.mark.parametrize("case", [c[0] for c in _ABORT_CASES])
def test_aborted_transition_rtl_matches_model(case):
    """The same traces on the RTL: every output of every cycle equals the model's."""
    runs = 0
    for p, _, want, got in _abort_runs(case, rtl=True):
        assert len(got) == len(want) == _END + ABORT.sample_cycles()
        for c, (g, w) in enumerate(zip(got, want, strict=True)):
            assert g == w, f"event at {p}, cycle {c}: " + str(
                {f: (g[f], w[f]) for f in g if g[f] != w[f]})
        runs += 1
    assert runs == 3
