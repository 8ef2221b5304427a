"""The generated Verilog of the array on Icarus and Verilator, through cocotb.

Each configuration is compiled once per session (and cached on disk by its Verilog);
each test streams several tiles with weight swaps and checks every row bit for bit
against the golden model, plus the latency and throughput formulas at full rate.
"""

import pytest

from llmchip.config import AcceleratorConfig
from llmchip.tb.sim import run_array
from llmchip.tb.streams import expected_last_output_cycle, random_tiles

SIZES = [(1, 1), (2, 3), (4, 4), (8, 8)]


@pytest.mark.parametrize("sim", ["icarus", "verilator"])
@pytest.mark.parametrize("dataflow", ["ws", "os"])
@pytest.mark.parametrize("rows, cols", SIZES)
def test_generated_array(rows, cols, dataflow, sim, seed, rng, sim_build):
    cfg = AcceleratorConfig(rows=rows, cols=cols, dataflow=dataflow)
    b = sim_build(cfg, sim)

    # Full rate: exact results, per-row latency and total cycles as the formulas say.
    lengths = [1, rows, 2 * rows + 1, 3, rows + 1, 1]
    res = run_array(cfg, random_tiles(cfg, rng, lengths), sim, seed=seed, b=b)
    assert res["outputs"][-1][0] == expected_last_output_cycle(cfg, lengths)

    # Random idle cycles on both input streams (the pattern is replayable from the seed).
    lengths = [int(n) for n in rng.integers(1, 2 * rows + 2, size=4)]
    res = run_array(cfg, random_tiles(cfg, rng, lengths), sim, seed=seed, valid_prob=0.6, b=b)
    assert len(res["outputs"]) == sum(lengths) if dataflow == "ws" else 4 * rows


OPTIONS = [
    ("icarus", "ws", {"mult": "packed", "pipeline": "mult2+acc"}),
    ("icarus", "ws", {"mult": "hybrid", "dsp_pes": 7, "pipeline": "acc"}),
    ("icarus", "os", {"mult": "lut", "pipeline": "mult"}),
    ("verilator", "ws", {"mult": "lut", "pipeline": "mult+acc"}),
]


@pytest.mark.parametrize("sim, dataflow, options", OPTIONS,
                         ids=["-".join([s, d, *map(str, o.values())]) for s, d, o in OPTIONS])
def test_generated_array_options(sim, dataflow, options, seed, rng, sim_build):
    """The multiplier-mapping and pipelining options in generated Verilog: bit-exact, and
    every row leaves ``config.latency`` (rows + cols + stages) cycles after it entered."""
    cfg = AcceleratorConfig(rows=4, cols=4, dataflow=dataflow, **options)
    b = sim_build(cfg, sim)
    lengths = [1, 4, 9, 3, 5, 1]
    res = run_array(cfg, random_tiles(cfg, rng, lengths), sim, seed=seed, b=b)
    assert res["outputs"][-1][0] == expected_last_output_cycle(cfg, lengths)
    lengths = [int(n) for n in rng.integers(1, 10, size=4)]
    run_array(cfg, random_tiles(cfg, rng, lengths), sim, seed=seed, valid_prob=0.6, b=b)
