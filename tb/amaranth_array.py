"""Drive a :class:`SystolicArray` in Amaranth's own simulator (fast unit tests, no Verilog)."""

from __future__ import annotations

import numpy as np
from amaranth.sim import Simulator

from llmchip.rtl.systolic import SystolicArray

from .streams import Beat, Stimulus

__all__ = ["run_array"]


def run_array(st: Stimulus, *, rng: np.random.Generator | None = None,
              valid_prob: float = 1.0, max_cycles: int | None = None):
    """Stream ``st`` through a fresh array and return its accept and output cycles.

    Parameters
    ----------
    st : Stimulus
    rng : numpy Generator, optional
        Source of random idle cycles on the input streams (with ``valid_prob`` < 1).
    valid_prob : float
        Probability that an input stream offers its next beat in a cycle.
    max_cycles : int, optional
        Give up (``TimeoutError``) after this many cycles; a generous bound by default.

    Returns
    -------
    (a_cycles, w_cycles, outputs) as taken by :func:`llmchip.tb.streams.check_run`.
    """
    cfg = st.config
    dut = SystolicArray(cfg)
    rng = rng or np.random.default_rng(0)
    n_out = len(st.expected)
    if max_cycles is None:
        max_cycles = int((len(st.a_beats) + len(st.w_beats) + 2 * len(st.tiles) * cfg.rows
                          + cfg.latency + 2 * cfg.rows + 16) / max(valid_prob, 0.05)) + 100
    a_cycles: list[int] = []
    w_cycles: list[int] = []
    outputs: list[tuple[int, Beat]] = []

    async def bench(ctx):
        ai = wi = 0
        for cycle in range(max_cycles):
            a_offer = ai < len(st.a_beats) and rng.random() < valid_prob
            w_offer = wi < len(st.w_beats) and rng.random() < valid_prob
            ctx.set(dut.a_in.valid, a_offer)
            ctx.set(dut.w_in.valid, w_offer)
            if a_offer:
                b = st.a_beats[ai]
                ctx.set(dut.a_in.payload, {"data": list(b.lanes), "last": int(b.last)})
            if w_offer:
                ctx.set(dut.w_in.payload, list(st.w_beats[wi].lanes))
            a_fire = a_offer and ctx.get(dut.a_in.ready)
            w_fire = w_offer and ctx.get(dut.w_in.ready)
            if ctx.get(dut.y_out.valid):
                y = ctx.get(dut.y_out.payload)
                outputs.append((cycle, Beat(tuple(int(v) for v in y.data), bool(y.last))))
            await ctx.tick()
            if a_fire:
                a_cycles.append(cycle)
                ai += 1
            if w_fire:
                w_cycles.append(cycle)
                wi += 1
            if len(outputs) == n_out and ai == len(st.a_beats):
                # Run past the end to catch spurious extra output rows.
                for extra in range(cfg.latency + cfg.rows + 2):
                    if ctx.get(dut.y_out.valid):
                        outputs.append((cycle + 1 + extra, Beat((), False)))
                    await ctx.tick()
                return
        raise TimeoutError(f"array produced {len(outputs)} of {n_out} rows in {max_cycles} "
                           f"cycles (accepted {ai}/{len(st.a_beats)} a, "
                           f"{wi}/{len(st.w_beats)} w beats)")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return a_cycles, w_cycles, outputs
