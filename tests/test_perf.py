"""The performance model: roofline, counters it predicts, and how it reacts to programs."""

import pytest

from llmchip.config import AcceleratorConfig
from llmchip.sw import isa, perf
from llmchip.sw.compile import GemmOp, compile_gemm

BIG = AcceleratorConfig(rows=16, cols=16, sp_rows=4096, acc_rows=512, param_rows=128)
SMALL = AcceleratorConfig(rows=4, cols=4, sp_rows=256, acc_rows=64, param_rows=8)


def test_roofline_bounds():
    r = perf.roofline(BIG, 128, 384, 1536)
    assert r["compute_cycles"] == 128 * 384 * 1536 // 256
    assert r["bound"] == "compute" and r["ideal_cycles"] == r["compute_cycles"]
    g = perf.roofline(BIG, 1, 576, 576)
    assert g["bound"] == "memory"
    # Reads (X, W, parameters) and writes (Y) use separate channels: the reads set it.
    assert g["memory_cycles"] == -(-(576 + 576 * 576 + 36 * 144) // 16)
    # A GEMM writing far more than it reads is bound by its writes.
    w = perf.roofline(BIG, 4096, 1, 16)
    assert w["memory_cycles"] == 4096 * 16 // 16 and w["bound"] == "memory"


def test_predicted_counters_match_the_program():
    prog = compile_gemm(SMALL, GemmOp(20, 30, 10, 0, 4096, 8192, 12288))
    res = perf.simulate(prog)
    rows = sum(d.fields["rows"] * max(1, d.fields["k_steps"])
               for d in map(isa.decode, prog.insns) if d.op == isa.Opcode.MATMUL)
    assert res.array_busy == rows
    assert res.macs == rows * SMALL.pes
    loads = sum(d.fields["rows"] * d.fields["row_bytes"]
                for d in map(isa.decode, prog.insns) if d.op == isa.Opcode.LOAD)
    assert res.dram_read_bytes == loads + 16 * len(prog.insns)
    assert res.dram_write_bytes == 20 * 10
    assert res.cycles >= perf.roofline(SMALL, 20, 30, 10)["ideal_cycles"]


def test_bigger_gemms_take_longer_and_reach_the_roof():
    small = perf.predict_gemm(BIG, 64, 384, 384)
    big = perf.predict_gemm(BIG, 128, 384, 384)
    assert big["cycles"] > small["cycles"]
    assert 0.5 < big["roofline_efficiency"] <= 1.0
    gemv = perf.predict_gemm(BIG, 1, 576, 576)
    assert gemv["bound"] == "memory" and 0.5 < gemv["roofline_efficiency"] <= 1.0


def test_slower_memory_costs_cycles():
    prog = compile_gemm(BIG, GemmOp(1, 576, 576, 0, 1 << 20, 2 << 20, 3 << 20))
    fast = perf.simulate(prog, timing=perf.Timing(dram_read_latency=4)).cycles
    slow = perf.simulate(prog, timing=perf.Timing(dram_read_latency=60)).cycles
    assert slow > fast


def test_a_program_that_cannot_finish_is_reported():
    prog = [isa.encode("matmul", rows=1, k_steps=1, pop_prev=True), isa.encode("end")]
    with pytest.raises(ValueError, match="cannot finish"):
        perf.simulate(prog, SMALL)


def test_a_program_needs_end():
    with pytest.raises(ValueError, match="must end with END"):
        perf.simulate([isa.encode("config")], SMALL)
