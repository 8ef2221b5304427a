"""Design-space sweeps: workloads recorded from the models, predictions equal to the
runtime's, consistent CSV/JSON, identical local and Dask runs, plots, RTL spot checks,
FPGA columns and bad grids."""

import csv
import json
import math
import warnings

import numpy as np
import pytest

import llmchip
from llmchip.cli import main
from llmchip.config import AcceleratorConfig
from llmchip.sw import golden
from llmchip.sw.runtime import Requant
from llmchip.sw.sweep import (
    CSV_COLUMNS,
    GEMM_CSV_COLUMNS,
    SweepGrid,
    evaluate_point,
    plot_results,
    point_rows,
    predict_program,
    rtl_checks,
    summarize,
)
from llmchip.sw.workloads import expand_workloads, workload_gemms

# Large arrays keep the compiler's schedule search short for the CLI sweeps; the RTL and
# runtime checks use the small configuration the backend tests build.
SMALL = AcceleratorConfig(rows=4, cols=4, sp_rows=256, acc_rows=64, param_rows=8)
SWEEP = ["sweep", "--rows", "32,64", "--cols", "32,64", "--sp-rows", "1024", "--seq-len", "8",
         "--layers", "1", "--workloads", "minilm", "--no-progress", "--plot"]


def _read_csv(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def _is_png(path):
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100, path


def test_minilm_gemms_come_from_the_model():
    from llmchip.sw.models.minilm import MiniLM

    c = MiniLM.load(n_layers=1).config
    got = {g.name: g.shape for g in workload_gemms("minilm", 8, n_layers=1)}
    d = c.hidden // c.n_heads
    assert got == {"layers.0.qkv": (8, c.hidden, 3 * c.hidden, 1),
                   "layers.0.attn.scores": (8, d, 8, c.n_heads),
                   "layers.0.attn.context": (8, 8, d, c.n_heads),
                   "layers.0.out": (8, c.hidden, c.hidden, 1),
                   "layers.0.ffn_in": (8, c.hidden, c.ffn, 1),
                   "layers.0.ffn_out": (8, c.ffn, c.hidden, 1)}
    assert len(workload_gemms("minilm", 8)) == 6 * c.n_layers


def test_smollm2_decode_attends_to_the_cache_and_the_new_token():
    gemms = workload_gemms("smollm2-decode", 5, n_layers=1)
    by = {g.kind: g for g in gemms}
    # One new token: every GEMM has one row; keys are the 5 cached positions plus its own.
    assert all(g.m == 1 for g in gemms)
    assert by["attn.scores"].n == 6 and by["attn.context"].k == 6
    assert by["attn.scores"].batch == 9           # query heads (grouped key/value heads)
    assert by["lm_head"].n == 49152 and [g.name for g in gemms][-1] == "lm_head"
    assert expand_workloads("smollm2,minilm") == ("smollm2-prefill", "smollm2-decode",
                                                  "minilm")


def test_prediction_equals_the_runtime_model_backend(rng):
    """The sweep predicts without executing; the model backend executes and predicts:
    both must give the same counters for the same program (one op or a head batch)."""
    dev = llmchip.open(SMALL, dram_bytes=1 << 22)
    for m, k, n, b in [(1, 9, 5, 1), (int(rng.integers(2, 20)), int(rng.integers(2, 40)),
                                      int(rng.integers(2, 20)), 3)]:
        with dev.batch() as batch:
            for _ in range(b):
                batch.matmul(golden.random_operands(rng, (m, k)),
                             golden.random_operands(rng, (k, n)), Requant.from_scale(0.01))
        p = predict_program(SMALL, m, k, n, b)
        for key in ("cycles", "dram_read_bytes", "dram_write_bytes", "ideal_cycles",
                    "macs", "array_busy"):
            assert p[key] == dev.last[key], (key, m, k, n, b)
        assert p["utilization"] == pytest.approx(dev.last["utilization"])


def _check_consistent(out, points):
    rows = _read_csv(out / "sweep.csv")
    grows = _read_csv(out / "sweep_gemms.csv")
    assert list(rows[0]) == list(CSV_COLUMNS) and list(grows[0]) == list(GEMM_CSV_COLUMNS)
    assert len(rows) == points and len(grows) == 6 * points
    data = json.loads((out / "sweep.json").read_text())
    assert len(data["points"]) == points
    for p in data["points"]:
        wl = p["workloads"]["minilm"]
        t = wl["totals"]
        for g in wl["gemms"]:
            assert g["cycles"] >= g["ideal_cycles"] > 0, g
            assert 0 < g["utilization"] <= 1 and 0 < g["roofline_efficiency"] <= 1, g
            assert g["macs"] == g["batch"] * g["m"] * g["k"] * g["n"]
        for key in ("cycles", "macs", "ideal_cycles", "dram_read_bytes", "dram_write_bytes"):
            assert t[key] == sum(g[key] for g in wl["gemms"]), key
        assert t["energy_uj"] == pytest.approx(sum(g["energy_uj"] for g in wl["gemms"]))
        assert t["utilization"] == pytest.approx(t["macs"] / p["pes"] / t["cycles"])
        assert 0 < t["utilization"] <= 1 and 0 < t["roofline_efficiency"] <= 1
        row = next(r for r in rows if r["point"] == p["point"])
        assert int(row["cycles"]) == t["cycles"] and int(row["pes"]) == p["pes"]
        mine = [r for r in grows if r["point"] == p["point"]]
        assert sum(int(r["cycles"]) for r in mine) == t["cycles"]
    return data


def test_sweep_outputs_and_local_equals_dask(tmp_path, capsys):
    import distributed

    assert main([*SWEEP, "--jobs", "2", "--out", str(tmp_path / "local")]) == 0
    text = capsys.readouterr().out
    assert "best point per metric" in text and "highest roofline efficiency" in text
    local = _check_consistent(tmp_path / "local", 4)
    for name in ("roofline_efficiency.png", "total_cycles.png"):
        _is_png(tmp_path / "local" / name)
    # The JSON holds every point in grid order, whatever order the workers finished in.
    assert [p["point"] for p in local["points"]] == [
        f"{r}x{c}-ws-sp1024-bus128" for r in (32, 64) for c in (32, 64)]

    with warnings.catch_warnings():
        # The cluster's own shutdown may warn about closing comms; not this product's.
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                                           processes=True, dashboard_address=None)
    try:
        assert main([*SWEEP, "--scheduler", cluster.scheduler_address, "--json",
                     "--out", str(tmp_path / "dask")]) == 0
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cluster.close()
    doc = json.loads(capsys.readouterr().out)
    assert doc["points"] == 4 and any(b["metric"] == "cycles" for b in doc["best"])
    remote = _check_consistent(tmp_path / "dask", 4)
    assert remote["points"] == local["points"]
    assert (tmp_path / "dask" / "sweep.csv").read_text() == \
        (tmp_path / "local" / "sweep.csv").read_text()


@pytest.mark.parametrize("args, text", [
    (["--rows", "0"], "rows must be between 1 and 256, not 0"),
    (["--cols", "4,300"], "cols must be between 1 and 256, not 300"),
    (["--bus-bits", "96"], "bus_bits must be one of 64, 128, 256, 512, not 96"),
    (["--sp-rows", "1000"], "sp_rows must be a power of two, not 1000"),
    (["--rows", "4,x"], "'x' is not one"),
    (["--dataflow", "xy"], "dataflow must be one of ws, os, not 'xy'"),
    (["--dataflow", "ws,os"], "dataflow 'os' exists only as the bare output-stationary array"),
    (["--workloads", "gpt2"], "not 'gpt2'"),
    (["--seq-len", "2"], "seq_len must be between 3 and 512, not 2"),
    (["--jobs", "0"], "--jobs must be >= 1, not 0"),
    (["--fpga", "ecp5"], "not 'ecp5'"),
])
def test_bad_input_exits_2_naming_the_value(args, text, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["sweep", *args, "--out", str(tmp_path / "x")])
    assert info.value.code == 2
    assert text in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_grid_validates_every_value():
    with pytest.raises(ValueError, match="rows needs at least one value"):
        SweepGrid(rows=())
    with pytest.raises(TypeError, match="rows must be an int, not str '8'"):
        SweepGrid(rows=("8",))
    grid = SweepGrid(rows=(4, 8, 4), cols=8, bus_bits=(64, 128))
    assert len(grid) == 4 and grid.rows == (4, 8)
    assert [(c.rows, c.bus_bits) for c in grid.configs()] == [(4, 64), (4, 128), (8, 64),
                                                              (8, 128)]


def _attention(seq=8):
    return [g for g in workload_gemms("minilm", seq, n_layers=1) if g.kind.startswith("attn")]


def test_rtl_spot_checks_agree_with_the_prediction():
    point = evaluate_point(SMALL, _attention())
    checks = rtl_checks({"points": [point]}, 2)
    assert len(checks) == 2
    for c in checks:
        assert c["exact"], c
        assert c["predicted_cycles"] == c["model_cycles"]
        # The performance model is within 1.5% of the hardware counters on benchmarks.
        assert abs(c["error"]) < 0.05, c
    assert {c["name"] for c in checks} == {"layers.0.attn.scores", "layers.0.attn.context"}


def test_fpga_columns_and_output_stationary_points(tmp_path):
    gemms = _attention()
    ws = AcceleratorConfig(rows=2, cols=2, sp_rows=1024, acc_rows=512, param_rows=128)
    points = [evaluate_point(cfg, gemms, fpga="ecp5-85k", fpga_dir=str(tmp_path / cfg.dataflow))
              for cfg in (ws, ws.replace(dataflow="os"))]
    result = {"workloads": {"minilm": {}}, "points": points}
    fp = points[0]["fpga"]
    assert fp["target"] == "ecp5-85k" and fp["dsps"] >= 4 and fp["luts"] > 0
    assert fp["fits"] and fp["fmax_mhz"] > 10
    assert (tmp_path / "ws" / "report.json").exists()
    t = points[0]["workloads"]["minilm"]["totals"]
    assert t["gops"] == pytest.approx(2 * t["macs"] / (t["cycles"] / (fp["fmax_mhz"] * 1e6))
                                      / 1e9)
    assert t["gops_per_dsp"] == pytest.approx(t["gops"] / fp["dsps"])
    assert math.isclose(t["gops_per_klut"], t["gops"] / fp["luts"] * 1000)
    # The output-stationary array has FPGA figures but no accelerator to run workloads.
    assert points[1]["workloads"] == {} and "only the bare array" in points[1]["note"]
    assert points[1]["fpga"]["luts"] > 0
    rows = point_rows(result)
    assert [r["workload"] for r in rows] == ["minilm", None]
    assert {b["metric"] for b in summarize(result)} >= {"gops_per_dsp", "fmax_mhz"}
    names = {p.name for p in plot_results(result, tmp_path / "plots")}
    assert names == {"roofline_efficiency.png", "total_cycles.png", "fpga_resources.png",
                     "throughput_per_resource.png"}
    for name in names:
        _is_png(tmp_path / "plots" / name)


def test_point_that_does_not_fit_reports_the_compiler_error():
    # A 16-row weight tile needs two buffers of 16 rows: a 16-row scratchpad holds none.
    tiny = AcceleratorConfig(rows=16, cols=16, sp_rows=16)
    point = evaluate_point(tiny, workload_gemms("minilm", 8, n_layers=1))
    t = point["workloads"]["minilm"]["totals"]
    assert t["cycles"] is None and "fits" in t["error"]
    row = point_rows({"points": [point]})[0]
    assert row["cycles"] is None and "fits" in row["note"]
    np.testing.assert_equal(t["macs"], sum(g.macs for g in
                                           workload_gemms("minilm", 8, n_layers=1)))
