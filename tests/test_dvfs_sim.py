"""Closed-loop DVFS studies: workloads from runtime runs, the loop's accounting, the
critical-trip property with the thermal plant, policy sanity, and ``llmchip dvfs``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from llmchip.cli import main
from llmchip.config import AcceleratorConfig
from llmchip.sw import dvfs_sim as ds
from llmchip.sw.dvfs import DvfsParams, write_trace
from llmchip.sw.power import (
    PowerConstants,
    dynamic_power_w,
    estimate_energy,
    leakage_power_w,
)

CFG = AcceleratorConfig(rows=16, cols=16, sp_rows=4096, param_rows=128)


def test_workload_from_a_real_minilm_run():
    from llmchip.sw.models.run import run_minilm
    from llmchip.sw.runtime import open_device

    with open_device(CFG, "model", dram_bytes=1 << 26) as dev:
        run_minilm(["A short sentence.", "Another one here."], device=dev, n_layers=1)
        hist, totals = list(dev.history), dict(dev.totals)
    wl = ds.workload_from_history("minilm", CFG, hist)
    assert len(wl.phases) == len(hist) > 5
    assert wl.cycles == totals["cycles"]
    cyc, e_pj, busy = wl.cumulative(PowerConstants())
    # The phases carry the run's counters: their energy is the run's energy at v_ref.
    ref = estimate_energy(CFG, totals, mhz=800, mv=900)["total_uj"]
    assert e_pj[-1] * 1e-6 == pytest.approx(ref, rel=1e-9)
    assert 0 < busy[-1] <= cyc[-1]
    assert all(0 < p.busy <= 1 and p.activity.macs <= CFG.pes for p in wl.phases)
    back = ds.Workload.from_dict(json.loads(json.dumps(wl.to_dict())))
    assert back == wl


def test_synthetic_workloads_and_errors():
    for name in ds.SYNTHETIC:
        wl = ds.workload(name, CFG)
        assert wl.name == name and wl.config == CFG
    assert ds.workload("idle", CFG).cycles == 0
    with pytest.raises(ValueError, match="unknown workload 'nope'"):
        ds.workload("nope", CFG)


def test_arrivals(rng, seed):
    wl = ds.workload("burst", CFG)
    t_req = wl.seconds_at(800)
    per = ds.arrivals(wl, 1.0, load=0.25, poisson=False)
    assert np.allclose(np.diff(per), t_req / 0.25)
    poi = ds.arrivals(wl, 20.0, load=0.25, seed=seed)
    assert poi[0] == 0 and np.all(np.diff(poi) > 0) and poi[-1] < 20
    assert np.mean(np.diff(poi)) == pytest.approx(t_req / 0.25, rel=0.15)
    assert np.array_equal(poi, ds.arrivals(wl, 20.0, load=0.25, seed=seed))
    back = ds.arrivals(wl, 0.1, load=1.0)
    assert np.all(back == 0) and len(back) == math.ceil(0.1 / t_req)
    assert len(ds.arrivals(ds.workload("idle", CFG), 1.0)) == 0
    with pytest.raises(ValueError, match="load must be between 0 and 1, not 1.5"):
        ds.arrivals(wl, 1.0, load=1.5)
    with pytest.raises(ValueError, match="duration must be between 0 and 3600 s, not -1"):
        ds.arrivals(wl, -1, load=0.5)


def test_closed_loop_energy_and_time_at_a_fixed_point():
    """The host pins the lowest point: the work takes fmax/fmin longer, and the energy
    is the model's dynamic power plus leakage over that time."""
    wl = ds.workload("steady", CFG)
    c = PowerConstants()
    p = ds.policy_params("performance", CFG, c, pmax=0)
    res = ds.simulate(wl, params=p, duration_s=0.004, load=1.0)
    s = res.summary
    n = s["requests"]
    assert s["completed"] == n and n == 4
    # 4 ms of work at 800 MHz takes 16 ms at 200 MHz (the ramp at reset is at 200 MHz)
    assert s["time_to_finish_s"] == pytest.approx(n * wl.seconds_at(200), rel=0.01)
    assert s["reason_s"].get("host", 0) > 0.9 * s["simulated_s"]
    mhz, mv = p.opps[0][:2]
    dyn = dynamic_power_w(CFG, wl.phases[0].activity, mhz, mv, c)
    leak = leakage_power_w(CFG, mv, 45.0, c)
    busy_s = s["time_to_finish_s"]
    assert s["energy_j"] == pytest.approx(dyn * busy_s + leak * s["simulated_s"], rel=0.02)
    assert all(m == 200 for m in res.series["mhz"])
    assert max(res.series["die_c"]) < 45 + (dyn + 0.1) * c.r_total_k_per_w


def test_critical_trip_bounds_time_above_t_crit():
    """Property 11: a full-power step with only the critical trip armed; T >= t_crit for
    at most the sensor period plus the die's cool-down after the supply is cut."""
    wl = ds.workload("power-step", CFG)
    c = PowerConstants()
    p = ds.policy_params("performance", CFG, c, t_passive=92000, t_hot=92000)
    worst = 0.0
    for ambient in (86.0, 88.0, 90.0):
        s = ds.simulate(wl, params=p, ambient_c=ambient, duration_s=0.02, sensor_us=50,
                        constants=c).summary
        assert s["thermtrip"] and s["reason_s"]["critical"] > 0
        assert s["completed"] < s["requests"]          # a trip stops the work
        rate = 7.0 / c.die_c_j_per_k                   # K/s at most (full load < 7 W)
        assert s["peak_die_c"] - 92.0 <= rate * (50e-6 + 5e-6) + 0.05
        worst = max(worst, s["over_t_crit_s"])
    n_max = 50e-6 + 2 * c.die_tau_s
    assert 0 < worst <= n_max
    # and without the critical trip the die would stay above t_crit
    free = ds.policy_params("performance", CFG, c, t_passive=120000, t_hot=120000,
                            t_crit=120000)
    s = ds.simulate(wl, params=free, ambient_c=88.0, duration_s=0.02).summary
    assert not s["thermtrip"] and s["peak_die_c"] > 92.0 + 1.0


def test_powercap_keeps_average_power_under_its_limit():
    wl = ds.workload("power-step", CFG)
    limit_mw = 2000
    p = ds.policy_params("powercap", CFG, kp_po=0, kp_pu=0, ki=0, kd=0,
                         p_sustain=limit_mw)
    res = ds.simulate(wl, params=p, duration_s=0.1)
    s = res.summary
    pw = np.array(res.series["power_w"])
    t = np.array(res.series["t"])
    assert pw[t > 0.01].mean() < limit_mw / 1000
    assert s["reason_s"]["power_cap"] > 0.9 * s["simulated_s"]
    free = ds.simulate(wl, "ondemand", duration_s=0.1).summary
    assert free["avg_power_w"] > 2 * limit_mw / 1000          # the cap did something
    assert s["time_to_finish_s"] > 1.5 * free["time_to_finish_s"]


def test_hot_ambient_engages_the_thermal_cap_below_t_crit():
    wl = ds.workload("power-step", CFG)
    hot = ds.simulate(wl, "ondemand", ambient_c=83.0, duration_s=0.1).summary
    assert hot["reason_s"].get("thermal", 0) > 0.05 and hot["throttled_s"] > 0.05
    assert hot["peak_die_c"] < 92.0 and not hot["thermtrip"]
    normal = ds.simulate(wl, "ondemand", ambient_c=45.0, duration_s=0.1).summary
    assert normal["throttled_s"] == 0 and normal["peak_die_c"] < 60
    assert normal["energy_j"] / normal["completed"] > hot["energy_j"] / hot["completed"]


def test_simulate_rejects_bad_input():
    wl = ds.workload("burst", CFG)
    with pytest.raises(ValueError, match="ambient must be between -40 and 150 C, not 900"):
        ds.simulate(wl, ambient_c=900)
    with pytest.raises(ValueError, match="unknown policy 'fast'"):
        ds.simulate(wl, "fast")
    with pytest.raises(ValueError, match="sensor_us must divide the sample period"):
        ds.simulate(wl, sensor_us=300)
    with pytest.raises(ValueError, match="tick_cycles must be 1, not 8"):
        ds.simulate(wl, params=DvfsParams(tick_cycles=8))


# -- command line ------------------------------------------------------------------------

def test_cli_simulate_json_and_plot(tmp_path, capsys):
    png = tmp_path / "run.png"
    rc = main(["dvfs", "simulate", "--policy", "schedutil", "--workload", "burst",
               "--ambient", "50", "--duration", "0.1", "--json", "--plot", str(png),
               "--series"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    s = doc["summary"]
    for key in ("energy_j", "time_to_finish_s", "edp_js", "peak_die_c", "throttled_s",
                "reason_s", "mean_latency_s"):
        assert key in s
    assert s["policy"] == "schedutil" and s["ambient_c"] == 50 and s["energy_j"] > 0
    assert s["edp_js"] == pytest.approx(s["energy_j"] * s["mean_latency_s"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(doc["series"]["t"]) == len(doc["series"]["die_c"]) > 10


def test_cli_simulate_constants_file(tmp_path, capsys):
    f = tmp_path / "c.toml"
    f.write_text("die_r_k_per_w = 3.0\n")
    args = ["dvfs", "simulate", "--workload", "steady", "--duration", "0.02", "--json"]
    assert main(args) == 0
    base = json.loads(capsys.readouterr().out)["summary"]
    assert main(args + ["--constants", str(f)]) == 0
    hot = json.loads(capsys.readouterr().out)["summary"]
    assert hot["peak_die_c"] - 45 > 2 * (base["peak_die_c"] - 45)


@pytest.mark.parametrize("args, match", [
    (["--workload", "nope"], "unknown workload 'nope'"),
    (["--ambient", "500"], "--ambient must be between -40 and 150 C, not 500"),
    (["--ambient", "hot"], "--ambient must be a number, not 'hot'"),
    (["--load", "2"], "--load must be between 0 and 1, not 2"),
    (["--constants", "/nonexistent.toml"], "no such file '/nonexistent.toml'"),
])
def test_cli_simulate_bad_input_exits_2(capsys, args, match):
    with pytest.raises(SystemExit) as exc:
        main(["dvfs", "simulate", "--duration", "0.01", *args])
    assert exc.value.code == 2
    assert match in capsys.readouterr().err


def test_cli_simulate_bad_constants_exits_2(tmp_path, capsys):
    f = tmp_path / "c.json"
    f.write_text('{"sink_r_k_per_w": -1}')
    with pytest.raises(SystemExit) as exc:
        main(["dvfs", "simulate", "--workload", "idle", "--constants", str(f)])
    assert exc.value.code == 2
    assert "sink_r_k_per_w must be a finite number > 0, not -1" in capsys.readouterr().err


def _trace(tmp_path, rng):
    rows, cycle = [], 0
    for _ in range(12):
        rows.append({"cycle": cycle, "temperature_mC": int(rng.integers(60000, 95000)),
                     "temp_valid": 1, "busy": int(rng.integers(0, 251)), "total": 250,
                     "prochot": int(rng.random() < 0.1)})
        cycle += int(rng.integers(100, 600))
    return write_trace(tmp_path / "trace.csv", rows)


def test_cli_replay_model(tmp_path, rng, capsys):
    from llmchip.sw.dvfs import replay

    path = _trace(tmp_path, rng)
    assert main(["dvfs", "replay", "--trace", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    want = replay(path, DvfsParams())
    assert [{k: r[k] for k in want[0]} for r in doc["rows"]] == want
    assert {"index", "v_req_mv", "clk_en", "reason", "thermtrip", "irq",
            "reason_name"} <= set(doc["rows"][0])
    assert main(["dvfs", "replay", "--trace", str(path)]) == 0
    assert "reason" in capsys.readouterr().out


@pytest.mark.parametrize("text, match", [
    ("cycle,temperature_mC,temp_valid,busy,total\n0,50000,1,0,0\n", "prochot"),
    ("cycle,temperature_mC,temp_valid,busy,total,prochot\n0,warm,1,0,0,0\n",
     "non-integer value"),
    ("cycle,temperature_mC,temp_valid,busy,total,prochot\n5,50000,1,0,0,0\n",
     "first trace row must be at cycle 0, not 5"),
])
def test_cli_replay_bad_trace_exits_2(tmp_path, capsys, text, match):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(SystemExit) as exc:
        main(["dvfs", "replay", "--trace", str(path)])
    assert exc.value.code == 2
    assert match in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_cli_replay_rtl_agrees_with_model(tmp_path, rng, capsys, sim):
    path = _trace(tmp_path, rng)
    assert main(["dvfs", "replay", "--trace", str(path), "--json"]) == 0
    model = json.loads(capsys.readouterr().out)["rows"]
    assert main(["dvfs", "replay", "--trace", str(path), "--backend", sim, "--json"]) == 0
    rtl = json.loads(capsys.readouterr().out)["rows"]
    assert rtl == model
