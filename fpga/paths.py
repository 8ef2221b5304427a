"""Estimated register-to-register paths of a synthesized ECP5 netlist, without P&R.

nextpnr reports one critical path per run, and a run of the full accelerator takes minutes
to most of an hour. :func:`estimate_paths` instead walks the netlist Yosys' ``synth_ecp5``
writes (``write_json``) and gives every timing endpoint (flip-flop inputs, block RAM and
registered multiplier inputs) an estimated arrival time, so the deep paths of a design are
all listed at once, in seconds.

The delays are rough, fixed per cell type (speed grade 6 figures nextpnr reports for a
LUT4, a carry cell, a multiplier and block RAM's clock-to-output) plus a fixed delay per
net for routing; carry chains between carry cells cost no net. Placement decides the real
routing, so the estimate ranks paths and shows their structure (which registers, how many
levels); only nextpnr's Fmax is a measurement.
"""

from __future__ import annotations

import re

__all__ = ["estimate_paths", "NET_NS"]

#: Routing delay assumed for every net between two cells (ns).
NET_NS = 0.9
_LOGIC_NS = {"LUT4": 0.24, "PFUMX": 0.25, "L6MUX21": 0.25, "CCU2C": 0.45, "ALU54B": 2.0}
_CLK_TO_Q_NS = {"TRELLIS_FF": 0.5, "DP16KD": 4.0, "MULT18X18D": 1.0}
_MULT_NS = 3.5      # MULT18X18D without input and output registers
_LUTRAM_NS = 0.6    # TRELLIS_DPR16X4 read address to data
_CARRY_NS = 0.06    # carry in to carry out (and sum) of a CCU2C, on the dedicated chain
_SUFFIX = re.compile(r"_(TRELLIS_FF|LUT4|CCU2C|PFUMX|L6MUX21|MULT18X18D|DP16KD|DPR16X4)_.*")


def _bits(conn, ports):
    return [b for p in ports for b in conn.get(p, []) if isinstance(b, int)]


def estimate_paths(netlist: dict, top: str = "top", limit: int = 20) -> list[dict]:
    """Return the ``limit`` slowest estimated endpoints of ``netlist``, slowest first.

    ``netlist`` is Yosys' JSON for an ECP5 design after ``synth_ecp5`` (flattened). Each
    entry has ``ns`` (estimated arrival plus the net into the endpoint), ``mhz``,
    ``endpoint`` (the cell), ``levels`` (cells on the path) and ``path`` (the names of
    the nets along it, source first, consecutive duplicates merged) and ``cells`` (the
    type of the cell driving each net of the path, unmerged). Endpoints whose
    names differ only in bit indices are listed once.
    """
    mod = netlist["modules"][top]
    names: dict[int, str] = {}
    for name, net in mod["netnames"].items():
        for b in net["bits"]:
            if isinstance(b, int) and (b not in names or not net.get("hide_name", 1)):
                names[b] = name
    driver: dict[int, str] = {}                   # bit -> type of the cell driving it
    source: dict[int, float] = {}                 # bit -> clock-to-output
    comb: dict[int, list[tuple[int, float]]] = {}  # bit -> [(input bit, delay from it)]

    def through(bits, delay):
        return [(b, NET_NS + delay) for b in bits]

    endpoints: list[tuple[str, list[int]]] = []
    for cname, cell in mod["cells"].items():
        kind, conn = cell["type"], cell["connections"]
        dirs = cell.get("port_directions", {})
        params = cell.get("parameters", {})
        ins = [p for p, d in dirs.items() if d == "input"]
        outs = _bits(conn, [p for p, d in dirs.items() if d == "output"])
        driver.update((b, kind) for b in outs)
        if kind == "TRELLIS_FF":
            source.update((b, _CLK_TO_Q_NS[kind]) for b in outs)
            endpoints.append((cname, _bits(conn, ("DI", "CE", "LSR"))))
        elif kind == "CCU2C":
            # The carry input arrives on the dedicated chain: marked so it costs no net.
            arcs = (through(_bits(conn, [p for p in ins if p != "CIN"]), _LOGIC_NS[kind])
                    + [(b, _CARRY_NS) for b in _bits(conn, ("CIN",))])
            for b in outs:
                comb[b] = arcs
        elif kind in _LOGIC_NS:
            for b in outs:
                comb[b] = through(_bits(conn, ins), _LOGIC_NS[kind])
        elif kind == "MULT18X18D":
            reg_in = str(params.get("REG_INPUTA_CLK", "NONE")).strip() != "NONE"
            reg_out = any(str(params.get(k, "NONE")).strip() != "NONE"
                          for k in ("REG_OUTPUT_CLK", "REG_PIPELINE_CLK"))
            if reg_in:
                endpoints.append((cname, _bits(conn, ins)))
            for b in outs:
                if reg_out:
                    source[b] = _CLK_TO_Q_NS[kind]
                elif reg_in:
                    source[b] = _CLK_TO_Q_NS[kind] + _MULT_NS
                else:
                    comb[b] = through(_bits(conn, ins), _MULT_NS)
        elif kind == "DP16KD":
            source.update((b, _CLK_TO_Q_NS[kind]) for b in outs)
            endpoints.append((cname, _bits(conn, ins)))
        elif kind == "TRELLIS_DPR16X4":
            for b in outs:
                comb[b] = through(_bits(conn, ("RAD",)), _LUTRAM_NS)
            endpoints.append((cname, _bits(conn, ("DI", "WAD", "WRE"))))
        else:                                      # I/O buffers, constants: path starts
            source.update((b, 0.0) for b in outs)

    arrival: dict[int, float] = {}
    prev: dict[int, int | None] = {}

    def settle(bit: int) -> float:
        # Iterative depth-first evaluation: netlists are deeper than Python's recursion.
        stack, waiting = [bit], set()
        while stack:
            b = stack[-1]
            if b in arrival:
                stack.pop()
                continue
            if b in source or b not in comb:
                arrival[b], prev[b] = source.get(b, 0.0), None
                stack.pop()
                continue
            arcs = comb[b]
            pending = [j for j, _ in arcs if j not in arrival]
            if pending:
                if b in waiting:
                    raise ValueError(f"combinational loop through net {names.get(b, b)!r}")
                waiting.add(b)
                stack.extend(pending)
                continue
            best, src = 0.0, None
            for j, delay in arcs:
                if arrival[j] + delay > best:
                    best, src = arrival[j] + delay, j
            arrival[b], prev[b] = best, src
            stack.pop()
        return arrival[bit]

    rows = []
    for cname, bits in endpoints:
        worst, wbit = 0.0, None
        for b in bits:
            t = settle(b) + NET_NS
            if t > worst:
                worst, wbit = t, b
        rows.append((worst, cname, wbit))
    rows.sort(key=lambda r: -r[0])

    out, seen = [], set()
    for ns, cname, bit in rows:
        key = re.sub(r"\d+", "#", _SUFFIX.sub("", cname))
        if key in seen or bit is None:
            continue
        seen.add(key)
        path, cells, b = [], [], bit
        while b is not None:
            path.append(_SUFFIX.sub("", names.get(b, f"${b}")))
            cells.append(driver.get(b, "port"))
            b = prev.get(b)
        path.reverse()
        cells.reverse()
        merged = [p for k, p in enumerate(path) if k == 0 or path[k - 1] != p]
        out.append({"ns": round(ns, 2), "mhz": round(1000.0 / ns, 1), "endpoint": cname,
                    "levels": len(path) - 1, "path": merged, "cells": cells})
        if len(out) == limit:
            break
    return out
