"""Verilog generation: files, sidecar, reproducibility, and Verilator -Wall lint."""

import json
import re
import subprocess

import pytest

from llmchip.config import AcceleratorConfig
from llmchip.rtl.generate import LINT_WAIVERS, generate, verilog_text
from llmchip.tb import toolchain


def test_generate_writes_verilog_and_params(tmp_path):
    cfg = AcceleratorConfig(rows=2, cols=3, dataflow="os")
    gen = generate(cfg, tmp_path / "out")
    text = gen.verilog.read_text()
    assert gen.verilog.name == "llmchip_array.v"
    ports = re.search(r"^module llmchip_array\((.*)\);", text, re.M).group(1)
    assert set(ports.replace(" ", "").split(",")) == {
        "clk", "rst", "a_in__valid", "a_in__ready", "a_in__payload", "w_in__valid",
        "w_in__ready", "w_in__payload", "y_out__valid", "y_out__payload"}
    # Payload widths: 2 lanes x 8 + last, 3 x 8, 3 x 32 + last.
    assert "input [16:0] a_in__payload;" in text
    assert "input [23:0] w_in__payload;" in text
    assert "output [96:0] y_out__payload;" in text
    params = json.loads(gen.params.read_text())
    assert params["module"] == "llmchip_array" and params["verilog_sha256"] == gen.sha256
    assert AcceleratorConfig.read_params(gen.params) == cfg
    assert "/work/" not in text and "src =" not in text  # no absolute source paths


def test_c_header_compiles(tmp_path):
    """Every define of params.h is valid C: flags as 0/1, choices as string literals."""
    from llmchip.rtl.generate import c_header
    cfg = AcceleratorConfig(rows=2, cols=3, mult="hybrid", dsp_pes=2, pipeline="mult+acc",
                            dvfs=True)
    (tmp_path / "params.h").write_text(c_header(cfg, "llmchip_accelerator"))
    (tmp_path / "main.c").write_text(
        '#include <string.h>\n#include "params.h"\n'
        'int main(void) { return !(LLMCHIP_ROWS == 2 && LLMCHIP_DVFS == 1'
        ' && LLMCHIP_DATAFLOW_OS == 0 && strcmp(LLMCHIP_PIPELINE, "mult+acc") == 0'
        ' && strcmp(LLMCHIP_MULT, "hybrid") == 0); }\n')
    subprocess.run(["gcc", "-Wall", "-Werror", "-o", str(tmp_path / "main"),
                    str(tmp_path / "main.c")], check=True, cwd=tmp_path)
    assert subprocess.run([str(tmp_path / "main")]).returncode == 0


def test_verilog_is_reproducible():
    cfg = AcceleratorConfig(rows=3, cols=2)
    assert verilog_text(cfg) == verilog_text(cfg)


def test_unknown_top_rejected():
    with pytest.raises(ValueError, match="top must be one of array, accelerator, not 'soc'"):
        verilog_text(AcceleratorConfig(), top="soc")


def test_waivers_each_have_a_reason():
    """Every waiver (or group of adjacent waivers) follows a comment giving the reason."""
    lines = LINT_WAIVERS.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("lint_off"):
            j = i - 1
            while lines[j].startswith("lint_off"):
                j -= 1
            assert lines[j].startswith("//"), f"waiver without a reason: {line}"


@pytest.mark.parametrize("dataflow", ["ws", "os"])
@pytest.mark.parametrize("rows, cols", [(16, 16), (1, 1), (3, 5)])
def test_verilator_lint_wall_is_clean(tmp_path, rows, cols, dataflow):
    """`verilator --lint-only -Wall` reports nothing beyond the waivers kept in rtl/."""
    exe = toolchain.require("verilator")
    gen = generate(AcceleratorConfig(rows=rows, cols=cols, dataflow=dataflow), tmp_path)
    proc = subprocess.run([exe, "--lint-only", "-Wall", str(LINT_WAIVERS), str(gen.verilog),
                           "--top-module", gen.module], capture_output=True, text=True,
                          timeout=600)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "%Warning" not in report, report[:3000]


def _lint_component(tmp_path, design, name):
    from amaranth.back import verilog

    from llmchip.rtl.generate import component_ports

    path = tmp_path / f"{name}.v"
    path.write_text(verilog.convert(design, name=name, ports=component_ports(design),
                                    emit_src=False))
    exe = toolchain.require("verilator")
    proc = subprocess.run([exe, "--lint-only", "-Wall", str(LINT_WAIVERS), str(path),
                           "--top-module", name], capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def _blocks():
    from llmchip.rtl.accumulator import Accumulator
    from llmchip.rtl.csr import CsrBlock
    from llmchip.rtl.execute import ExecuteUnit
    from llmchip.rtl.load import LoadUnit
    from llmchip.rtl.scratchpad import Scratchpad
    from llmchip.rtl.store import StoreUnit

    return {
        "scratchpad": lambda: Scratchpad(16, 64, 2),
        "accumulator": lambda: Accumulator(16, 64),
        "execute": lambda: ExecuteUnit(AcceleratorConfig(rows=4, cols=3), 64, 32),
        "csr": lambda: CsrBlock({"ID": 1, "CFG_ACC": 64}),
        "store": lambda: StoreUnit(AcceleratorConfig(rows=2, cols=20), 32, 8, 8),
        "load": lambda: LoadUnit(AcceleratorConfig(rows=6, cols=4), 64, 16, 4, 8),
    }


@pytest.mark.parametrize("block", sorted(_blocks()))
def test_blocks_lint_clean(tmp_path, block):
    """Each accelerator block's Verilog passes `verilator -Wall` with the same waivers."""
    code, report = _lint_component(tmp_path, _blocks()[block](), block)
    assert code == 0 and "%Warning" not in report, report[:3000]
