"""Check that a component's ECP5 mapping (hard multipliers with their own registers) is
cycle for cycle the same as its portable one, by running both side by side in Icarus.

The ECP5 netlist instantiates MULT18X18D, which Yosys knows only as a black box; a
behavioural model of the part of it the generator uses (A, B and output registers on CLK0,
any CE and RST, signed or unsigned operands, no cascade, no pipeline register) stands in
for it. Both netlists get the same random inputs every cycle, and every output is
compared after the inputs change and after each clock edge.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from amaranth.back import verilog

from . import toolchain

__all__ = ["ECP5_PLATFORM", "MULT18X18D_MODEL", "compare_mappings"]


class _Ecp5Platform:
    """Stands in for an ECP5 board platform: the generator only reads ``family``."""

    family = "ecp5"


#: The platform argument that selects the ECP5 mapping.
ECP5_PLATFORM = _Ecp5Platform()


def _bits(prefix: str, n: int) -> str:
    return ", ".join(f"{prefix}{i}" for i in reversed(range(n)))


def _select(param: str, kind: str) -> str:
    """A Verilog expression picking the CE or RST input a parameter names."""
    return " : ".join(f'({param} == "{kind}{k}") ? {kind}{k}' for k in range(4)) + " : 1'b0"


def _model() -> str:
    regs = []
    for reg, width, source in (("A", 18, "a_in"), ("B", 18, "b_in")):
        regs.append(f"""
  reg [{width - 1}:0] {reg.lower()}_q = 0;
  wire {reg.lower()}_ce = {_select(f"REG_INPUT{reg}_CE", "CE")};
  wire {reg.lower()}_rst = {_select(f"REG_INPUT{reg}_RST", "RST")};
  always @(posedge CLK0)
    if ({reg.lower()}_rst) {reg.lower()}_q <= 0;
    else if ({reg.lower()}_ce) {reg.lower()}_q <= {source};
  wire [{width - 1}:0] {reg.lower()}_m =
    (REG_INPUT{reg}_CLK == "NONE") ? {source} : {reg.lower()}_q;
""")
    return f"""// Behavioural model of the ECP5 MULT18X18D features the generator uses.
module MULT18X18D({_bits("A", 18)}, {_bits("B", 18)}, {_bits("C", 18)},
    SIGNEDA, SIGNEDB, SOURCEA, SOURCEB, CLK0, CLK1, CLK2, CLK3, CE0, CE1, CE2, CE3,
    RST0, RST1, RST2, RST3, {_bits("P", 36)});
  input {_bits("A", 18)};
  input {_bits("B", 18)};
  input {_bits("C", 18)};
  input SIGNEDA, SIGNEDB, SOURCEA, SOURCEB, CLK0, CLK1, CLK2, CLK3, CE0, CE1, CE2, CE3;
  input RST0, RST1, RST2, RST3;
  output {_bits("P", 36)};
  parameter REG_INPUTA_CLK = "NONE";
  parameter REG_INPUTA_CE = "CE0";
  parameter REG_INPUTA_RST = "RST0";
  parameter REG_INPUTB_CLK = "NONE";
  parameter REG_INPUTB_CE = "CE0";
  parameter REG_INPUTB_RST = "RST0";
  parameter REG_INPUTC_CLK = "NONE";
  parameter REG_PIPELINE_CLK = "NONE";
  parameter REG_OUTPUT_CLK = "NONE";
  parameter REG_OUTPUT_CE = "CE0";
  parameter REG_OUTPUT_RST = "RST0";
  parameter GSR = "ENABLED";
  parameter RESETMODE = "SYNC";
  parameter CLK0_DIV = "ENABLED";
  parameter CLK1_DIV = "ENABLED";
  parameter CLK2_DIV = "ENABLED";
  parameter CLK3_DIV = "ENABLED";
  parameter HIGHSPEED_CLK = "NONE";
  parameter CAS_MATCH_REG = "FALSE";
  parameter SOURCEB_MODE = "B_SHIFT";
  parameter MULT_BYPASS = "DISABLED";
  initial begin
    if ((REG_INPUTA_CLK != "NONE" && REG_INPUTA_CLK != "CLK0")
        || (REG_INPUTB_CLK != "NONE" && REG_INPUTB_CLK != "CLK0")
        || (REG_OUTPUT_CLK != "NONE" && REG_OUTPUT_CLK != "CLK0")
        || REG_PIPELINE_CLK != "NONE" || REG_INPUTC_CLK != "NONE"
        || RESETMODE != "SYNC" || MULT_BYPASS != "DISABLED") begin
      $display("MULT18X18D model: unsupported parameters");
      $finish;
    end
  end
  wire [17:0] a_in = {{{_bits("A", 18)}}};
  wire [17:0] b_in = {{{_bits("B", 18)}}};
{"".join(regs)}
  wire [35:0] a_x = {{{{18{{SIGNEDA & a_m[17]}}}}, a_m}};
  wire [35:0] b_x = {{{{18{{SIGNEDB & b_m[17]}}}}, b_m}};
  wire [35:0] prod = a_x * b_x;
  reg [35:0] p_q = 0;
  wire p_ce = {_select("REG_OUTPUT_CE", "CE")};
  wire p_rst = {_select("REG_OUTPUT_RST", "RST")};
  always @(posedge CLK0)
    if (p_rst) p_q <= 0;
    else if (p_ce) p_q <= prod;
  wire [35:0] p_out = (REG_OUTPUT_CLK == "NONE") ? prod : p_q;
  assign {{{_bits("P", 36)}}} = p_out;
endmodule
"""


#: Verilog text of the MULT18X18D model.
MULT18X18D_MODEL = _model()

_PORT = re.compile(r"^\s*(input|output)\s+(?:\[(\d+):0\]\s+)?(\w+)\s*;", re.M)


def _ports(text: str, module: str) -> list[tuple[str, str, int]]:
    """(direction, name, width) of the ports of ``module`` in Verilog ``text``."""
    start = re.search(rf"^module {re.escape(module)}\s*\(", text, re.M)
    if start is None:
        raise ValueError(f"module {module!r} not in the netlist")
    body = text[start.end():text.index("endmodule", start.end())]
    return [(d, n, int(w) + 1 if w else 1) for d, w, n in _PORT.findall(body)]


_WAKE = re.compile(r"^(\s*)reg (\\\S+dump_module\$\d+ ) = 0;$", re.M)


def _wake_at_start(text: str) -> str:
    """Make Yosys' start-up trigger fire in Icarus.

    Yosys' Verilog backend names a register in every combinational block's sensitivity
    list so that the blocks run once at time 0. Icarus applies a declaration's initial
    value before the blocks wait, so they never see it change; assigned in an initial
    block after a zero delay, the change wakes them.
    """
    return _WAKE.sub(r"\1reg \2;\n\1initial #0 \2= 0;", text)


def compare_mappings(make, workdir: Path, *, cycles: int = 1000, seed: int = 0,
                     high: dict[str, float] | None = None,
                     masks: dict[str, int] | None = None) -> dict:
    """Run the portable and the ECP5 netlists of ``make()`` side by side.

    Parameters
    ----------
    make : callable
        Returns a fresh component (it is elaborated twice).
    workdir : Path
        Where the netlists, the testbench and the log go.
    cycles : int
        Clock cycles after reset.
    seed : int
        Seed of the random inputs (printed by the testbench).
    high : dict, optional
        Probability that a one-bit input is high, by port name (default 0.5).
    masks : dict, optional
        A mask ANDed with the random value of a wider input, by port name (to keep a
        field in a range where the behaviour under test happens).

    Returns
    -------
    dict
        ``{"ok": bool, "mismatch": str or None, "dsps": int, "log": str}``, where
        ``dsps`` counts the MULT18X18D instances of the ECP5 netlist.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    ref = verilog.convert(make(), name="portable", emit_src=False)
    dsp = verilog.convert(make(), name="ecp5", platform=ECP5_PLATFORM, emit_src=False)
    ports = _ports(ref, "portable")
    if ports != _ports(dsp, "ecp5"):
        raise ValueError("the two mappings have different ports")
    high, masks = high or {}, masks or {}
    decl, conn, drive, check = [], [], [], []
    for direction, name, width in ports:
        rng_w = f"[{width - 1}:0] " if width > 1 else ""
        if name == "clk":
            conn.append(".clk(clk)")
            continue
        if name == "rst":
            conn.append(".rst(rst)")
            continue
        if direction == "input":
            # No initial value: the first drive is then a change on every input, which
            # wakes every combinational block of the netlists (an `always @*` whose
            # inputs never change from their initial values is never evaluated).
            decl.append(f"  reg {rng_w}{name};")
            conn.append(f".{name}({name})")
            if width == 1:
                threshold = int(high.get(name, 0.5) * 1000)
                drive.append(f"    {name} = ($unsigned($random(seed)) % 1000) < {threshold};")
            else:
                parts = ", ".join(["$random(seed)"] * ((width + 31) // 32))
                mask = masks.get(name, (1 << width) - 1)
                drive.append(f"    {name} = {{{parts}}} & {width}'h{mask:x};")
        else:
            decl.append(f"  wire {rng_w}ref_{name};\n  wire {rng_w}dsp_{name};")
            conn.append(f".{name}(@_{name})")
            check.append(f'    if (ref_{name} !== dsp_{name}) begin $display("MISMATCH cycle '
                         f'%0d {name} portable %h ecp5 %h", cyc, ref_{name}, dsp_{name}); '
                         "$finish; end")
    conns = ", ".join(conn)
    checks = "\n".join(check)
    tb = f"""`timescale 1ns/1ps
module tb;
  reg clk = 0;
  reg rst = 1;
  integer seed = {seed};
  integer cyc;
{chr(10).join(decl)}
  portable u_ref({conns.replace("@", "ref")});
  ecp5 u_dsp({conns.replace("@", "dsp")});
  initial begin
    $display("seed %0d", seed);
    #1;
    for (cyc = 0; cyc < {cycles + 2}; cyc = cyc + 1) begin
      rst = cyc < 2;
{chr(10).join(drive)}
      #1;
{checks}
      clk = 1;
      #1;
{checks}
      clk = 0;
      #1;
    end
    $display("DONE");
    $finish;
  end
endmodule
"""
    files = {"ref.v": _wake_at_start(ref), "dsp.v": _wake_at_start(dsp),
             "mult18x18d.v": MULT18X18D_MODEL, "tb.v": tb}
    for name, text in files.items():
        (workdir / name).write_text(text)
    exe = toolchain.require("icarus")
    out = workdir / "sim.vvp"
    subprocess.run([exe, "-g2012", "-o", str(out), "-s", "tb",
                    *(str(workdir / n) for n in files)], check=True, capture_output=True,
                   text=True)
    log = subprocess.run(["vvp", "-n", str(out)], capture_output=True, text=True,
                         timeout=600).stdout
    (workdir / "sim.log").write_text(log)
    mismatch = next((line for line in log.splitlines() if line.startswith("MISMATCH")), None)
    return {"ok": "DONE" in log and mismatch is None, "mismatch": mismatch,
            "dsps": len(re.findall(r"^\s*MULT18X18D\b", dsp, re.M)), "log": log}
