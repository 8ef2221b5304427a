"""The model backend's executor: instruction semantics, as the RTL defines them."""

import numpy as np
import pytest

from llmchip.config import AcceleratorConfig
from llmchip.sw import golden, isa
from llmchip.sw.executor import ExecutionError, Machine

CFG = AcceleratorConfig(rows=4, cols=3, sp_rows=64, acc_rows=16, param_rows=4)


def test_load_zero_fills_short_rows_and_reads_strided():
    m = Machine(CFG, 4096)
    m.write(100, bytes(range(1, 41)))
    m.sp[:] = 99
    m.step(isa.decode(isa.encode("load", mem=0, rows=3, row_bytes=2, dram_addr=100,
                                 dram_stride=10, sram_addr=5)))
    assert m.sp[5:8].tolist() == [[1, 2, 0, 0], [11, 12, 0, 0], [21, 22, 0, 0]]
    assert (m.sp[4] == 99).all() and (m.sp[8] == 99).all()


def test_looped_matmul_equals_load_w_matmul_pairs(rng):
    a = Machine(CFG, 4096)
    a.sp[:] = golden.random_operands(rng, (64, 4))
    b = Machine(CFG, 4096)
    b.sp[:] = a.sp
    steps, rows = 3, 5
    a.step(isa.decode(isa.encode("matmul", sp_addr=10, sp_stride=1, rows=rows, acc_addr=2,
                                 k_steps=steps, w_addr=40, a_step=7)))
    for s in range(steps):
        b.step(isa.decode(isa.encode("load_w", sp_addr=40 + 4 * s, sp_stride=1)))
        b.step(isa.decode(isa.encode("matmul", sp_addr=10 + 7 * s, sp_stride=1, rows=rows,
                                     acc_addr=2, accumulate=int(s > 0))))
    assert np.array_equal(a.acc, b.acc)
    want = sum(a.sp[10 + 7 * s:15 + 7 * s].astype(np.int64)
               @ a.sp[40 + 4 * s:44 + 4 * s, :3].astype(np.int64) for s in range(steps))
    assert np.array_equal(a.acc[2:7], want)


def test_unused_load_w_pairs_with_the_next_step():
    # The array pairs weight tiles with MATMUL steps in order, as the RTL does.
    m = Machine(CFG, 4096)
    m.sp[0:4, :3] = 1
    m.sp[4:8, :3] = 2
    m.sp[20] = [1, 1, 1, 1]
    m.step(isa.decode(isa.encode("load_w", sp_addr=0, sp_stride=1)))
    m.step(isa.decode(isa.encode("matmul", sp_addr=20, sp_stride=1, rows=1, acc_addr=0,
                                 k_steps=1, w_addr=4, a_step=0)))
    assert m.acc[0].tolist() == [4, 4, 4]      # the earlier tile (ones), not its own
    assert len(m.tiles) == 1


def test_matmul_without_weights_is_an_error():
    m = Machine(CFG, 4096)
    with pytest.raises(ExecutionError, match="wait for weights forever"):
        m.run([isa.encode("matmul", rows=1), isa.encode("end")])


def test_sums_wrap_to_int32():
    m = Machine(CFG, 4096)
    m.acc[0] = (1 << 31) - 1
    m.sp[0:4, :3] = 1
    m.sp[10] = [1, 0, 0, 0]
    m.step(isa.decode(isa.encode("matmul", sp_addr=10, sp_stride=1, rows=1, acc_addr=0,
                                 accumulate=1, k_steps=1, w_addr=0, a_step=0)))
    assert m.acc[0].tolist() == [-(1 << 31)] * 3


def test_store_requantizes_with_param_row(rng):
    m = Machine(CFG, 4096)
    acc = rng.integers(-50000, 50000, size=(2, 3))
    m.acc[4:6] = acc
    bias, mult, shift = np.array([5, -7, 100]), np.array([1 << 20, 3 << 19, 1 << 25]), \
        np.array([24, 25, 30])
    row = (bias.astype("<i4").tobytes() + mult.astype("<u4").tobytes()
           + shift.astype("u1").tobytes())
    m.write(0, row)
    m.step(isa.decode(isa.encode("load", mem=2, rows=1, row_bytes=27, dram_addr=0,
                                 dram_stride=27, sram_addr=1)))
    m.step(isa.decode(isa.encode("config", zero_point=-2, relu=1)))
    m.step(isa.decode(isa.encode("store", rows=2, cols=2, acc_addr=4, param_addr=1,
                                 dram_addr=200, dram_stride=7)))
    want = golden.requantize(acc[:, :2], bias[:2], mult[:2], shift[:2], -2, True)
    got = np.frombuffer(m.read(200, 9), dtype=np.int8)
    assert got[[0, 1, 7, 8]].tolist() == want.ravel().tolist()
    assert got[2:7].tolist() == [0] * 5


@pytest.mark.parametrize("word, text", [
    (isa.encode("load", mem=0, rows=1, row_bytes=5, dram_addr=0, dram_stride=5), "bad LOAD"),
    (isa.encode("load", mem=0, rows=2, row_bytes=4, dram_addr=4094, dram_stride=4),
     "outside"),
    (isa.encode("matmul", rows=1, acc_addr=16, k_steps=1), "accumulator rows"),
    (isa.encode("matmul", rows=1, k_steps=2, w_addr=60), "scratchpad rows"),
    (isa.encode("store", rows=1, cols=4), "bad STORE"),
    (0xF, "illegal opcode"),
])
def test_bad_instructions_name_their_index(word, text):
    m = Machine(CFG, 4096)
    with pytest.raises(ExecutionError, match=text) as info:
        m.run([isa.encode("config"), word, isa.encode("end")])
    assert "instruction 1" in str(info.value)


def test_program_without_end_is_an_error():
    with pytest.raises(ExecutionError, match="no END"):
        Machine(CFG, 4096).run([isa.encode("config")])
