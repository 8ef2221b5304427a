"""Replay DVFS traces on the controller's RTL: Amaranth's simulator or generated Verilog.

:func:`replay_rtl` runs the Verilog of :class:`llmchip.rtl.dvfs.DvfsSystem` (controller
plus platform twin) under cocotb on Icarus or Verilator and returns exactly what
:func:`llmchip.sw.dvfs.replay` returns. :func:`rtl_cycles` and :func:`model_cycles`
record every output of every cycle (and CSR reads) from Amaranth's simulator and from
the reference model, for cycle-by-cycle comparison.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from amaranth.back import verilog
from amaranth.sim import Simulator

from llmchip.rtl.dvfs import DvfsSystem
from llmchip.rtl.generate import component_ports
from llmchip.sw import regs
from llmchip.sw.dvfs import (
    DvfsModel,
    DvfsParams,
    PlatformModel,
    normalize_writes,
    read_trace,
    trace_spans,
)

from .sim import Build, cached_build, run_cocotb

__all__ = ["MODULE", "dvfs_verilog", "build_dvfs", "replay_rtl", "rtl_cycles",
           "model_cycles", "CYCLE_FIELDS", "check_properties"]

#: Top module name of the replay design.
MODULE = "llmchip_dvfs_system"

#: What :func:`rtl_cycles`/:func:`model_cycles` record per cycle.
CYCLE_FIELDS = ("index", "target", "v_req_mv", "v_req_valid", "f_index", "clk_en", "duty",
                "prochot_o", "thermtrip", "irq", "reason", "tick", "sensor_fault",
                "modulating", "seq", "pll_lock", "v_ack", "mv")

_PLATFORM = ("pll_lock", "v_ack", "mv")


def dvfs_verilog(params: DvfsParams | None = None, v_delay: int = 5,
                 lock_delay: int = 5) -> str:
    """Return the Verilog of the replay design (controller plus platform twin)."""
    design = DvfsSystem(params, v_delay, lock_delay)
    return verilog.convert(design, name=MODULE, ports=component_ports(design),
                           emit_src=False)


def _sidecar(params: DvfsParams, v_delay: int, lock_delay: int) -> dict:
    return {"dvfs": {k: (int(v) if isinstance(v, bool) else v)
                     for k, v in asdict(params).items()},
            "v_delay": v_delay, "lock_delay": lock_delay}


def build_dvfs(params: DvfsParams | None = None, sim: str = "verilator", *,
               v_delay: int = 5, lock_delay: int = 5, root: Path | None = None) -> Build:
    """Compile the replay design for ``sim`` unless an identical build is cached.

    Raises
    ------
    ValueError
        If ``sim`` is unknown.
    ToolchainError, SimulationError
        If the simulator is missing or the build fails.
    """
    params = params or DvfsParams()
    text = dvfs_verilog(params, v_delay, lock_delay)
    sidecar = _sidecar(params, v_delay, lock_delay)

    def write_sources(src: Path) -> Path:
        path = src / f"{MODULE}.v"
        path.write_text(text)
        (src / "params.json").write_text(json.dumps(sidecar, indent=1, default=str))
        return path

    directory, key, seconds, cached = cached_build(
        text=text, sidecar=json.loads(json.dumps(sidecar, default=str)), module=MODULE,
        label=f"dvfs-{params.n_opps}opp", sim=sim, write_sources=write_sources, root=root)
    return Build(None, sim, "dvfs", MODULE, directory, key, seconds, cached)


def _job(trace, params: DvfsParams, writes) -> dict:
    if isinstance(trace, (str, Path)):
        trace = read_trace(trace)
    spans = trace_spans(trace, params)
    return {"spans": [[a, b, i.temp_mc, int(i.temp_valid), i.busy, i.total,
                       int(i.prochot_i)] for a, b, i in spans],
            "writes": [[c, (off - regs.DVFS_BASE) >> 2, v] for c, off, v in
                       normalize_writes(writes)]}


def replay_rtl(trace, params: DvfsParams | None = None, writes=(), sim: str = "verilator",
               *, v_delay: int = 5, lock_delay: int = 5, build: Build | None = None
               ) -> list[dict]:
    """Replay ``trace`` on the generated Verilog under cocotb; same result as ``replay``.

    Parameters
    ----------
    trace, params, writes, v_delay, lock_delay
        As for :func:`llmchip.sw.dvfs.replay`.
    sim : {"verilator", "icarus"}
    build : Build, optional
        A build from :func:`build_dvfs` for the same parameters (made if not given).

    Returns
    -------
    list of dict
        Per trace row, as :func:`llmchip.sw.dvfs.replay`.

    Raises
    ------
    SimulationError
        If the build or the simulation fails.
    """
    params = params or DvfsParams()
    b = build or build_dvfs(params, sim, v_delay=v_delay, lock_delay=lock_delay)
    if b.sim != sim:
        raise ValueError(f"build is for {b.sim}, not {sim!r}")
    return run_cocotb(b, "llmchip.tb.cocotb_dvfs", _job(trace, params, writes))["rows"]


def rtl_cycles(trace, params: DvfsParams | None = None, writes=(), reads=(), *,
               v_delay: int = 5, lock_delay: int = 5) -> tuple[list[dict], list[int]]:
    """Simulate the replay design in Amaranth's simulator; record every cycle.

    Parameters
    ----------
    trace, params, writes, v_delay, lock_delay
        As for :func:`llmchip.sw.dvfs.replay`.
    reads : iterable of (cycle, offset)
        CSR reads issued in those cycles (byte offsets 0x200-0x2FC, distinct cycles).

    Returns
    -------
    (cycles, read_values)
        One dict of :data:`CYCLE_FIELDS` per cycle, and the value each read returned.
    """
    params = params or DvfsParams()
    spans = trace_spans(read_trace(trace) if isinstance(trace, (str, Path)) else trace,
                        params)
    wr = {c: (off, v) for c, off, v in normalize_writes(writes)}
    rd = dict((c, off) for c, off in reads)
    dut = DvfsSystem(params, v_delay, lock_delay)
    ctrl = dut.ctrl
    records: list[dict] = []
    values: list[int] = []

    async def bench(ctx):
        pending_read = False
        for start, end, inp in spans:
            ctx.set(dut.temp_mc, inp.temp_mc)
            ctx.set(dut.temp_valid, inp.temp_valid)
            ctx.set(dut.busy, inp.busy)
            ctx.set(dut.total, inp.total)
            ctx.set(dut.prochot_i, inp.prochot_i)
            for cycle in range(start, end):
                if pending_read:
                    values.append(ctx.get(dut.csr_rdata))
                    pending_read = False
                w = wr.get(cycle)
                ctx.set(dut.csr_we, w is not None)
                if w is not None:
                    ctx.set(dut.csr_addr, (w[0] - regs.DVFS_BASE) >> 2)
                    ctx.set(dut.csr_wdata, w[1])
                r = rd.get(cycle)
                ctx.set(dut.csr_re, r is not None)
                if r is not None:
                    if w is not None:
                        raise ValueError(f"a read and a write in cycle {cycle}")
                    ctx.set(dut.csr_addr, (r - regs.DVFS_BASE) >> 2)
                    pending_read = True
                rec = {name: int(ctx.get(getattr(ctrl, name)))
                       for name in CYCLE_FIELDS if name not in _PLATFORM}
                for name in _PLATFORM:
                    rec[name] = int(ctx.get(getattr(dut, name)))
                records.append(rec)
                await ctx.tick()
        if pending_read:
            values.append(ctx.get(dut.csr_rdata))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return records, values


def model_cycles(trace, params: DvfsParams | None = None, writes=(), reads=(), *,
                 v_delay: int = 5, lock_delay: int = 5) -> tuple[list[dict], list[int]]:
    """The reference model's counterpart of :func:`rtl_cycles` (same records)."""
    params = params or DvfsParams()
    spans = trace_spans(read_trace(trace) if isinstance(trace, (str, Path)) else trace,
                        params)
    wr = {c: (off, v) for c, off, v in normalize_writes(writes)}
    rd = dict((c, off) for c, off in reads)
    model = DvfsModel(params)
    plat = PlatformModel(params, v_delay, lock_delay)
    records, values = [], []
    for start, end, base in spans:
        for cycle in range(start, end):
            if cycle in wr:
                model.csr_write(*wr[cycle])
            if cycle in rd:
                values.append(model.csr_read(rd[cycle]))
            inputs = type(base)(temp_mc=base.temp_mc, temp_valid=base.temp_valid,
                                busy=base.busy, total=base.total, prochot_i=base.prochot_i,
                                pll_lock=plat.pll_lock, v_ack=plat.v_ack)
            out = model.step(inputs)
            rec = {name: int(getattr(out, name)) for name in CYCLE_FIELDS
                   if name not in _PLATFORM}
            for name in _PLATFORM:
                rec[name] = int(getattr(plat, name))
            records.append(rec)
            plat.step(out)
    return records, values


def check_properties(records: list[dict], trace, params: DvfsParams | None = None, *,
                     v_delay: int = 5, lock_delay: int = 5, check_rate: bool = True) -> dict:
    """Check the specification's properties 1-5 and 7 on a per-cycle record stream.

    ``records`` come from :func:`rtl_cycles` or :func:`model_cycles` for ``trace`` run
    with reset-value registers (writes to the OPP table or timing registers void the
    bounds; pass ``check_rate=False`` if DVFS_RATE_LIMIT was written).

    Returns
    -------
    dict
        What was seen (transitions, trips, sensor faults), so tests can tell that the
        checks had something to check.

    Raises
    ------
    AssertionError
        Naming the property and the cycle that violates it.
    """
    p = params or DvfsParams()
    spans = trace_spans(read_trace(trace) if isinstance(trace, (str, Path)) else trace, p)
    mv_of = [opp[1] for opp in p.opps]
    tc = p.tick_cycles
    k_trip = 2
    k_seq = p.transition_ticks_bound(v_delay, lock_delay) * 2 * tc + 16
    seen = {"transitions": 0, "trips": 0, "faults": 0, "cycles": len(records)}
    inputs = []
    for start, end, inp in spans:
        inputs += [inp] * (end - start)
    trip_at = None
    invalid_since = None
    last_done = None
    ticks = 0
    for c, r in enumerate(records):
        inp = inputs[c]
        # 1. critical trip within k_trip cycles, latched.
        if trip_at is None and inp.temp_valid and inp.temp_mc >= p.t_crit:
            trip_at = c
            seen["trips"] += 1
        if trip_at is not None and c >= trip_at + k_trip:
            assert r["thermtrip"] and not r["clk_en"], f"property 1: cycle {c}"
        if c and records[c - 1]["thermtrip"]:
            assert r["thermtrip"], f"property 1: thermtrip released at cycle {c}"
        # 2. the applied voltage supports the frequency; requests never undercut it.
        assert mv_of[r["f_index"]] <= r["mv"], f"property 2: cycle {c}: {r}"
        if r["v_req_valid"]:
            assert mv_of[r["f_index"]] <= r["v_req_mv"], f"property 2: cycle {c}: {r}"
        # 3. clock only while locked.
        assert not r["clk_en"] or r["pll_lock"], f"property 3: cycle {c}"
        # 4. one transition at a time, at least rate_limit ticks apart (counted from the
        # last completed one: an aborted upward transition leaves the index and the rate
        # timer alone).
        if c and records[c - 1]["seq"] and not r["seq"] and records[c - 1]["index"] != r["index"]:
            last_done, ticks = c, 0
            seen["transitions"] += 1
        if c + 1 < len(records) and not r["seq"] and records[c + 1]["seq"]:
            if check_rate and last_done is not None:
                assert ticks >= p.rate_limit, f"property 4: cycle {c}: {ticks} ticks"
        if not r["seq"] and r["tick"] and last_done is not None and c >= last_done:
            ticks += 1
        if r["seq"] in (1, 2):
            # frequency is raised only after the voltage, so it still trails the index
            assert r["f_index"] <= r["index"], f"property 2: cycle {c}: {r}"
        # 5. inside the table; the frequency rises only up to the current target.
        assert 0 <= r["index"] < p.n_opps and 0 <= r["f_index"] < p.n_opps
        if c and r["f_index"] > records[c - 1]["f_index"]:
            assert r["f_index"] <= r["target"], f"property 5: cycle {c}: {r}"
        # 7. sensor fault (timeout) reaches the lowest point in time.
        if inp.temp_valid:
            invalid_since = None
        elif invalid_since is None:
            invalid_since = c
        if invalid_since is not None:
            limit = invalid_since + (p.sensor_timeout + 2) * tc + k_seq
            if c >= limit:
                assert r["sensor_fault"] and r["f_index"] == 0 and r["index"] == 0, \
                    f"property 7: cycle {c} (invalid since {invalid_since}): {r}"
                seen["faults"] += c == limit
    return seen
