"""SystolicArray in Amaranth's simulator: bit-exact tiles, latency and throughput formulas."""

import numpy as np
import pytest

from llmchip.config import AcceleratorConfig
from llmchip.rtl.systolic import SystolicArray
from llmchip.tb.amaranth_array import run_array
from llmchip.tb.streams import (
    check_run,
    expected_last_output_cycle,
    make_stimulus,
    random_tiles,
)

CONFIGS = [(1, 1), (2, 3), (3, 2), (4, 4)]


@pytest.mark.parametrize("dataflow", ["ws", "os"])
@pytest.mark.parametrize("rows, cols", CONFIGS)
def test_full_rate_stream_is_exact_and_meets_formulas(rows, cols, dataflow, rng):
    cfg = AcceleratorConfig(rows=rows, cols=cols, dataflow=dataflow)
    lengths = [1, rows, 2 * rows + 1, 1, rows + 3]
    st = make_stimulus(cfg, random_tiles(cfg, rng, lengths))
    a, w, out = run_array(st)
    check_run(st, a, w, out)
    assert out[-1][0] == expected_last_output_cycle(cfg, lengths)


@pytest.mark.parametrize("dataflow", ["ws", "os"])
@pytest.mark.parametrize("rows, cols", CONFIGS)
def test_random_idle_cycles_on_inputs(rows, cols, dataflow, rng):
    cfg = AcceleratorConfig(rows=rows, cols=cols, dataflow=dataflow)
    lengths = [int(n) for n in rng.integers(1, 2 * rows + 3, size=5)]
    st = make_stimulus(cfg, random_tiles(cfg, rng, lengths))
    check_run(st, *run_array(st, rng=rng, valid_prob=0.55))


@pytest.mark.parametrize("dataflow", ["ws", "os"])
def test_back_to_back_tiles_have_no_bubble(dataflow, rng):
    """Tiles of at least `rows` beats stream every cycle: weight loads / drains overlap."""
    cfg = AcceleratorConfig(rows=4, cols=3, dataflow=dataflow)
    st = make_stimulus(cfg, random_tiles(cfg, rng, [4, 5, 4, 6]))
    a, w, out = run_array(st)
    check_run(st, a, w, out)
    assert np.all(np.diff(a) == 1), f"input stalled: accepted in cycles {a}"
    cycles = np.array([c for c, _ in out])
    if dataflow == "ws":
        assert np.all(np.diff(cycles) == 1), "output rows not back to back"
    else:  # each tile drains its `rows` result rows in consecutive cycles
        assert np.all(np.diff(cycles.reshape(-1, cfg.rows), axis=1) == 1)


def test_short_ws_tiles_are_limited_by_weight_port(rng):
    """A one-row tile (a GEMV) costs `rows` cycles: the weight port moves one row a cycle."""
    cfg = AcceleratorConfig(rows=4, cols=2)
    st = make_stimulus(cfg, random_tiles(cfg, rng, [1] * 5))
    a, w, out = run_array(st)
    check_run(st, a, w, out)
    assert list(np.diff(a)) == [4] * 4
    assert list(np.diff(w)) == [1] * (len(w) - 1), "weight port idled"


@pytest.mark.parametrize("dataflow", ["ws", "os"])
def test_accumulator_wraps_like_golden(dataflow, rng):
    """int16 accumulation of four -128*-128 products wraps; the array matches the model."""
    cfg = AcceleratorConfig(rows=4, cols=2, dataflow=dataflow, acc_width=16)
    if dataflow == "ws":
        tiles = [(np.full((4, 2), -128), np.full((3, 4), -128))]
    else:
        tiles = [(np.full((4, 4), -128), np.full((4, 2), -128))]
    tiles += random_tiles(cfg, rng, [4, 2])
    st = make_stimulus(cfg, tiles)
    assert st.expected[0].lanes == (0, 0)  # 65536 wraps to 0
    check_run(st, *run_array(st))


def test_non_default_operand_width(rng):
    cfg = AcceleratorConfig(rows=3, cols=2, in_width=4, acc_width=12)
    st = make_stimulus(cfg, random_tiles(cfg, rng, [3, 5]))
    check_run(st, *run_array(st))


def test_array_rejects_non_config():
    with pytest.raises(TypeError, match="config must be an AcceleratorConfig, not dict"):
        SystolicArray({"rows": 2})


def test_stimulus_rejects_wrong_tile_shapes():
    cfg = AcceleratorConfig(rows=2, cols=2)
    with pytest.raises(ValueError, match="tile 0"):
        make_stimulus(cfg, [(np.zeros((3, 2), dtype=int), np.zeros((1, 2), dtype=int))])


# -- multiplier mapping and pipelining options (config.mult / config.pipeline) -----------

OPTIONS = [
    ("ws", {"mult": "lut"}), ("ws", {"mult": "packed"}), ("ws", {"mult": "hybrid"}),
    ("ws", {"pipeline": "mult"}), ("ws", {"pipeline": "acc"}),
    ("ws", {"mult": "packed", "pipeline": "mult+acc"}),
    ("ws", {"mult": "hybrid", "pipeline": "mult+acc"}), ("ws", {"pipeline": "mult2"}),
    ("ws", {"mult": "lut", "pipeline": "mult2+acc"}),
    ("os", {"mult": "lut"}), ("os", {"mult": "hybrid", "pipeline": "mult"}),
    ("os", {"pipeline": "mult"}), ("os", {"pipeline": "mult2"}),
]


def _options_config(rows, cols, dataflow, options):
    options = dict(options)
    if options.get("mult") == "hybrid":
        options["dsp_pes"] = rows * cols // 2
    return AcceleratorConfig(rows=rows, cols=cols, dataflow=dataflow, **options)


@pytest.mark.parametrize("dataflow, options", OPTIONS,
                         ids=[f"{d}-" + "-".join(f"{v}" for v in o.values()) for d, o in OPTIONS])
@pytest.mark.parametrize("rows, cols", [(1, 1), (3, 2), (2, 5), (4, 4)])
def test_options_are_exact_and_meet_formulas(rows, cols, dataflow, options, rng):
    """Every mapping/pipelining option streams bit-exact at full rate and with idle cycles,
    with latency ``rows + cols + stages`` (checked per row by check_run)."""
    cfg = _options_config(rows, cols, dataflow, options)
    lengths = [1, rows, 2 * rows + 1, 1, rows + 3]
    st = make_stimulus(cfg, random_tiles(cfg, rng, lengths))
    a, w, out = run_array(st)
    check_run(st, a, w, out)
    assert out[-1][0] == expected_last_output_cycle(cfg, lengths)
    lengths = [int(n) for n in rng.integers(1, 2 * rows + 3, size=4)]
    st = make_stimulus(cfg, random_tiles(cfg, rng, lengths))
    check_run(st, *run_array(st, rng=rng, valid_prob=0.55))


@pytest.mark.parametrize("pipeline, stages", [("none", 0), ("mult", 1), ("mult2", 2),
                                              ("acc", 1), ("mult+acc", 2), ("mult2+acc", 3)])
def test_pipeline_stages_add_to_latency(pipeline, stages):
    cfg = AcceleratorConfig(rows=3, cols=5, pipeline=pipeline)
    assert cfg.latency == 3 + 5 + stages


@pytest.mark.parametrize("options, muls", [
    ({"mult": "auto"}, 12), ({"mult": "dsp"}, 12), ({"mult": "lut"}, 0),
    ({"mult": "hybrid", "dsp_pes": 5}, 5), ({"mult": "packed"}, 6),
])
def test_mapping_decides_the_multiply_cells(options, muls):
    """Only hard-multiplier PEs (or packed pairs) contain a multiply; LUT PEs have none."""
    from amaranth.back import rtlil

    from llmchip.rtl.generate import component_ports

    design = SystolicArray(AcceleratorConfig(rows=3, cols=4, **options))
    text = rtlil.convert(design, ports=component_ports(design), emit_src=False)
    assert text.count("cell $mul ") == muls


def test_packed_pairs_leave_an_odd_last_column_alone():
    from llmchip.rtl.systolic import pe_mults

    kinds = pe_mults(AcceleratorConfig(rows=2, cols=5, mult="packed"))
    assert kinds == [["packed"] * 4 + ["dsp"]] * 2
    kinds = pe_mults(AcceleratorConfig(rows=2, cols=3, mult="hybrid", dsp_pes=4))
    assert kinds == [["dsp"] * 3, ["dsp", "lut", "lut"]]
