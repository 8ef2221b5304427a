"""Host-side tiling of a matmul onto the bare array (checked in Amaranth's simulator)."""

import numpy as np
import pytest

from llmchip.config import AcceleratorConfig
from llmchip.sw import golden
from llmchip.sw.tiling import tile_matmul
from llmchip.tb.amaranth_array import run_array
from llmchip.tb.streams import check_run, make_stimulus


@pytest.mark.parametrize("dataflow", ["ws", "os"])
@pytest.mark.parametrize("m, k, n", [(1, 1, 1), (5, 7, 3), (3, 9, 8), (9, 4, 5)])
def test_tiled_matmul_on_array_is_exact(m, k, n, dataflow, rng):
    cfg = AcceleratorConfig(rows=3, cols=4, dataflow=dataflow)
    x = golden.random_operands(rng, (m, k))
    w = golden.random_operands(rng, (k, n))
    plan = tile_matmul(cfg, x, w)
    st = make_stimulus(cfg, plan.tiles)
    a, wc, out = run_array(st)
    check_run(st, a, wc, out)
    y = plan.assemble([beat.lanes for _, beat in out])
    np.testing.assert_array_equal(y, golden.matmul(x, w))
    assert plan.macs == m * k * n


def test_assemble_rejects_wrong_row_count():
    cfg = AcceleratorConfig(rows=2, cols=2)
    plan = tile_matmul(cfg, np.ones((3, 3), dtype=int), np.ones((3, 3), dtype=int))
    with pytest.raises(ValueError, match="expected 12 output rows, got 2"):
        plan.assemble(np.zeros((2, 2)))


def test_tile_matmul_rejects_bad_shapes():
    cfg = AcceleratorConfig(rows=2, cols=2)
    with pytest.raises(ValueError, match="cannot multiply"):
        tile_matmul(cfg, np.ones((2, 3), dtype=int), np.ones((2, 3), dtype=int))
    with pytest.raises(ValueError, match="cannot multiply"):
        tile_matmul(cfg, np.ones((0, 3), dtype=int), np.ones((3, 3), dtype=int))
