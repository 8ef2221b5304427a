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
