"""The llmchip command line."""

import json
import subprocess
import sys

import pytest

from llmchip.cli import main


def test_help_explains_options(capsys):
    with pytest.raises(SystemExit) as info:
        main(["generate", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--rows", "--cols", "--dataflow", "--in-width", "--acc-width", "--out",
                   "--json"):
        assert option in out


@pytest.mark.parametrize("argv, text", [
    (["generate", "--rows", "0", "--out", "x"], "rows must be between 1 and 256, not 0"),
    (["generate", "--cols", "300", "--out", "x"], "cols must be between 1 and 256, not 300"),
    (["generate", "--acc-width", "8", "--out", "x"], "acc_width must be between 16 and 64"),
    (["demo", "--m", "0"], "--m must be >= 1, not 0"),
])
def test_bad_input_exits_2_with_message(argv, text, capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert text in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_argparse_rejects_non_numbers(capsys):
    with pytest.raises(SystemExit) as info:
        main(["generate", "--rows", "four", "--out", "x"])
    assert info.value.code == 2
    assert "invalid int value: 'four'" in capsys.readouterr().err


def test_generate_summary_and_json(tmp_path, capsys):
    assert main(["generate", "--top", "array", "--rows", "4", "--cols", "2",
                 "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "4x2 weight-stationary" in out and "latency        6 cycles" in out
    assert (tmp_path / "a" / "llmchip_array.v").exists()
    assert main(["generate", "--top", "array", "--rows", "3", "--cols", "3", "--dataflow",
                 "os", "--json", "--out", str(tmp_path / "b")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["config"]["dataflow"] == "os" and data["derived"]["latency"] == 6
    assert (tmp_path / "b" / "params.json").exists()


@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_demo_runs_a_checked_matmul(tmp_path, sim):
    """The installed entry point runs end to end and reports a bit-exact result."""
    proc = subprocess.run(
        [sys.executable, "-m", "llmchip", "demo", "--rows", "4", "--cols", "4", "--m", "6",
         "--k", "9", "--n", "5", "--seed", "7", "--sim", sim, "--json",
         "--out", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    assert data["bit_exact"] and data["mismatches"] == 0 and data["results"] == 30
    assert data["cycles"] == data["formula_cycles"]
    assert data["seed"] == 7 and data["tiles"] == 6


def test_generate_accelerator_by_default(tmp_path, capsys):
    assert main(["generate", "--rows", "4", "--cols", "4", "--sp-rows", "64", "--acc-rows",
                 "32", "--bus-bits", "64", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "llmchip generate (accelerator)" in out and "AXI4 64-bit DMA" in out
    text = (tmp_path / "llmchip_accelerator.v").read_text()
    assert "module llmchip_accelerator(" in text and "csr__awaddr" in text
    params = json.loads((tmp_path / "params.json").read_text())
    assert params["config"]["bus_bits"] == 64 and params["module"] == "llmchip_accelerator"


def test_generate_with_dvfs(tmp_path, capsys):
    assert main(["generate", "--rows", "2", "--cols", "2", "--sp-rows", "64", "--acc-rows",
                 "32", "--dvfs", "--dvfs-tick-cycles", "5", "--out", str(tmp_path)]) == 0
    assert "controller at 0x200-0x2FC" in capsys.readouterr().out
    text = (tmp_path / "llmchip_accelerator.v").read_text()
    assert "dvfs__temp_mc" in text and "dvfs__thermtrip" in text
    params = json.loads((tmp_path / "params.json").read_text())
    assert params["config"]["dvfs"] is True and params["config"]["dvfs_tick_cycles"] == 5
    with pytest.raises(SystemExit) as info:
        main(["generate", "--dvfs-tick-cycles", "0", "--out", str(tmp_path / "x")])
    assert info.value.code == 2
    assert "dvfs_tick_cycles must be between 1 and 65535, not 0" in capsys.readouterr().err


def test_accelerator_rejects_os_dataflow(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["generate", "--dataflow", "os", "--out", str(tmp_path)])
    assert info.value.code == 2
    assert "the accelerator needs dataflow = 'ws', not 'os'" in capsys.readouterr().err


def test_gemm_json_on_the_model_backend(capsys):
    assert main(["gemm", "--m", "20", "--k", "36", "--n", "24", "--rows", "4", "--cols", "4",
                 "--sp-rows", "256", "--acc-rows", "64", "--param-rows", "8", "--seed", "3",
                 "--relu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bit_exact"] is True and out["mismatches"] == 0
    assert out["seed"] == 3 and out["backend"] == "model"
    assert out["macs"] == 20 * 36 * 24
    assert out["cycles"] == out["model_cycles"] >= out["ideal_cycles"] > 0
    assert 0 < out["roofline_efficiency"] <= 1 and 0 < out["utilization"] <= 1
    assert out["dram_bytes"] >= out["compulsory_bytes"]
    for key in ("wall_s", "schedule", "dram_read_bytes", "dram_write_bytes"):
        assert key in out


def test_gemm_on_verilator_reports_hardware_counters(capsys):
    assert main(["gemm", "--m", "9", "--k", "10", "--n", "11", "--rows", "4", "--cols", "4",
                 "--sp-rows", "256", "--acc-rows", "64", "--param-rows", "8", "--backend",
                 "verilator", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert "bit-exact: 99/99 outputs" in out
    assert "performance model" in out and "roofline" in out


@pytest.mark.parametrize("argv, text", [
    (["gemm", "--m", "0", "--k", "4", "--n", "4"], "--m must be between 1 and 65536, not 0"),
    (["gemm", "--m", "4", "--k", "4", "--n", "4", "--dataflow", "os"], "--dataflow must be ws"),
    (["gemm", "--m", "4", "--k", "4", "--n", "4", "--sp-rows", "100"],
     "sp_rows must be a power of two"),
])
def test_gemm_bad_input_exits_2(argv, text, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert text in capsys.readouterr().err
