"""Compiler: every shape compiles to a program whose execution is bit-exact and whose
tokens balance; schedules respect the memories; dependent operations are fenced."""

import numpy as np
import pytest

from llmchip.config import AcceleratorConfig
from llmchip.sw import golden, isa
from llmchip.sw.compile import (
    CompileError,
    GemmOp,
    ProgramBuilder,
    Schedule,
    candidate_schedules,
    choose_schedule,
    compile_gemm,
    pack_params,
    pack_weights,
    packed_weight_bytes,
    param_bytes,
)
from llmchip.sw.executor import Machine

SMALL = AcceleratorConfig(rows=4, cols=4, sp_rows=256, acc_rows=64, param_rows=8)
ODD = AcceleratorConfig(rows=3, cols=5, sp_rows=128, acc_rows=32, param_rows=4, bus_bits=64)
BIG = AcceleratorConfig(rows=16, cols=16, sp_rows=4096, acc_rows=512, param_rows=128)


def _align(x):
    return (x + 63) // 64 * 64


def place(machine, cfg, rng, m, k, n, *, zero_point=0, relu=False, base=0):
    """Write random operands for an m x k x n GEMM; return (op, expected Y)."""
    x = golden.random_operands(rng, (m, k))
    w = golden.random_operands(rng, (k, n))
    bias = rng.integers(-3000, 3000, size=n)
    mult, shift = golden.quantize_multiplier(rng.uniform(2e-3, 2e-2, size=n))
    xa = _align(base)
    wa = _align(xa + m * k)
    pa = _align(wa + packed_weight_bytes(cfg, k, n))
    ya = _align(pa + param_bytes(cfg, n))
    machine.write(xa, x.astype(np.int8).tobytes())
    machine.write(wa, pack_weights(cfg, w))
    machine.write(pa, pack_params(cfg, bias, mult, shift, n))
    op = GemmOp(m, k, n, xa, wa, pa, ya, zero_point=zero_point, relu=relu)
    ref = golden.requantize(golden.matmul(x, w), bias, mult, shift, zero_point, relu)
    return op, ref


def read_y(machine, op):
    raw = machine.read(op.y_addr, op.m * op.n)
    return np.frombuffer(raw, dtype=np.int8).reshape(op.m, op.n).astype(np.int64)


def token_balance(program):
    """Pushes minus pops per direction: all zero for a program that ends clean."""
    bal = {"ld>ex": 0, "ex>ld": 0, "ex>st": 0, "st>ex": 0}
    for word in program.insns:
        i = isa.decode(word)
        q = isa.QUEUE[i.op]
        if q == isa.Queue.LOAD:
            bal["ld>ex"] += i.push_next
            bal["ex>ld"] -= i.pop_next
        elif q == isa.Queue.EXECUTE:
            bal["ex>ld"] += i.push_prev
            bal["ex>st"] += i.push_next
            bal["ld>ex"] -= i.pop_prev
            bal["st>ex"] -= i.pop_next
        elif q == isa.Queue.STORE:
            bal["st>ex"] += i.push_prev
            bal["ex>st"] -= i.pop_prev
    return bal


@pytest.mark.parametrize("cfg", [SMALL, ODD, BIG], ids=["4x4", "3x5-bus64", "16x16"])
def test_random_shapes_are_bit_exact(cfg, rng):
    machine = Machine(cfg, 1 << 21)
    for _ in range(6):
        m, k, n = (int(v) for v in rng.integers(1, 70, size=3))
        zp, relu = int(rng.integers(-10, 10)), bool(rng.integers(2))
        op, ref = place(machine, cfg, rng, m, k, n, zero_point=zp, relu=relu)
        program = compile_gemm(cfg, op)
        machine.run(program)
        assert np.array_equal(read_y(machine, op), ref), (m, k, n, program.schedules)
        assert all(v == 0 for v in token_balance(program).values())
        assert program.stats["fences"] == 0, (m, k, n, program.schedules)


@pytest.mark.parametrize("m, k, n", [(1, 1, 1), (1, 576, 40), (1, 4, 300), (300, 4, 1),
                                     (129, 33, 17), (64, 128, 64)])
def test_every_candidate_schedule_is_bit_exact(m, k, n, rng):
    cfg = SMALL
    machine = Machine(cfg, 1 << 21)
    op, ref = place(machine, cfg, rng, m, k, n, zero_point=-5)
    cands = candidate_schedules(cfg, m, k, n)
    assert cands
    for sch in cands[:: max(1, len(cands) // 8)]:
        machine.dram[op.y_addr:op.y_addr + m * n] = 0
        program = compile_gemm(cfg, op, sch)
        machine.run(program)
        assert np.array_equal(read_y(machine, op), ref), sch
        assert all(v == 0 for v in token_balance(program).values()), sch


def test_schedules_fit_the_memories():
    for m, k, n in [(128, 384, 384), (1, 1536, 576), (512, 64, 16)]:
        cands = candidate_schedules(BIG, m, k, n)
        for sch in cands[::max(1, len(cands) // 3)]:
            prog = compile_gemm(BIG, GemmOp(m, k, n, 0, 0, 0, 0), sch)
            for word in prog.insns:
                i = isa.decode(word)
                f = i.fields
                if i.op == isa.Opcode.LOAD and f["mem"] == isa.Mem.SCRATCHPAD:
                    assert f["sram_addr"] + f["rows"] <= BIG.sp_rows
                if i.op == isa.Opcode.MATMUL:
                    assert f["acc_addr"] + f["rows"] <= BIG.acc_rows
                    assert f["w_addr"] + f["k_steps"] * BIG.rows <= BIG.sp_rows
                    last = f["sp_addr"] + (f["k_steps"] - 1) * f["a_step"] + f["rows"] - 1
                    assert last < BIG.sp_rows


def test_chained_operations_are_fenced_and_exact(rng):
    cfg = SMALL
    machine = Machine(cfg, 1 << 21)
    op1, ref1 = place(machine, cfg, rng, 20, 12, 9)
    w2 = golden.random_operands(rng, (9, 6))
    base = _align(op1.y_addr + 20 * 9)
    machine.write(base, pack_weights(cfg, w2))
    pa = _align(base + packed_weight_bytes(cfg, 9, 6))
    machine.write(pa, pack_params(cfg, 0, 1 << 20, 24, 6))
    op2 = GemmOp(20, 9, 6, op1.y_addr, base, pa, _align(pa + param_bytes(cfg, 6)))
    op3, ref3 = place(machine, cfg, rng, 7, 5, 3, base=op2.y_addr + 4096)
    b = ProgramBuilder(cfg)
    b.add_gemm(op1)
    b.add_gemm(op3)          # independent: no fence
    assert b.fences == 0
    b.add_gemm(op2)          # reads op1's output: fenced
    program = b.finish()
    assert program.stats["fences"] == 1
    machine.run(program)
    assert np.array_equal(read_y(machine, op1), ref1)
    assert np.array_equal(read_y(machine, op3), ref3)
    ref2 = golden.requantize(golden.matmul(ref1, w2), 0, 1 << 20, 24)
    assert np.array_equal(read_y(machine, op2), ref2)
    assert all(v == 0 for v in token_balance(program).values())


def test_pack_weights_layout():
    cfg = AcceleratorConfig(rows=2, cols=3, sp_rows=64, acc_rows=16, param_rows=4)
    w = np.arange(5 * 4).reshape(5, 4) - 10
    packed = np.frombuffer(pack_weights(cfg, w), dtype=np.int8).reshape(2, 6, 3)
    assert np.array_equal(packed[0, :5], w[:, :3])
    assert np.array_equal(packed[1, :5, :1], w[:, 3:])
    assert not packed[0, 5:].any() and not packed[1, :, 1:].any()
    assert len(pack_weights(cfg, w)) == packed_weight_bytes(cfg, 5, 4)


@pytest.mark.parametrize("kwargs, text", [
    ({"m": 0}, "m must be a positive int"),
    ({"k": -3}, "k must be a positive int"),
    ({"x_stride": 2}, "row strides must cover a row"),
    ({"zero_point": 200}, "zero_point must be in [-128, 127]"),
])
def test_bad_operations_are_rejected(kwargs, text):
    args = {"m": 4, "k": 4, "n": 4, "x_addr": 0, "w_addr": 0, "p_addr": 0, "y_addr": 0}
    args.update(kwargs)
    with pytest.raises(CompileError, match=text.replace("[", r"\[").replace("]", r"\]")):
        GemmOp(**args)


def test_schedule_that_does_not_fit_is_rejected():
    with pytest.raises(CompileError, match="scratchpad rows"):
        compile_gemm(SMALL, GemmOp(256, 512, 8, 0, 0, 0, 0), Schedule(256, 1, 128, 256))
    with pytest.raises(CompileError, match="accumulator rows"):
        compile_gemm(SMALL, GemmOp(64, 4, 64, 0, 0, 0, 0), Schedule(64, 4, 1, 64))


def test_choose_schedule_picks_a_fitting_schedule():
    sch = choose_schedule(BIG, 128, 384, 1536)
    assert sch in candidate_schedules(BIG, 128, 384, 1536)


def test_bad_params_are_rejected():
    with pytest.raises(ValueError, match="mult must be in"):
        pack_params(SMALL, 0, 1 << 31, 0, 4)
    with pytest.raises(ValueError, match="shift must be in"):
        pack_params(SMALL, 0, 1, 64, 4)


def test_relocated_program_equals_a_fresh_compile():
    ops_a = [GemmOp(20, 30, 10, 0, 4096, 8192, 12288),
             GemmOp(20, 10, 7, 12288, 16384, 20480, 24576)]
    ops_b = [GemmOp(20, 30, 10, 1 << 20, 3 << 20, 5 << 20, 7 << 20),
             GemmOp(20, 10, 7, 7 << 20, 9 << 20, 11 << 20, 13 << 20)]

    def build(ops):
        b = ProgramBuilder(SMALL)
        for op in ops:
            b.add_gemm(op)
        return b.finish()

    moved = build(ops_a).relocate(ops_b)
    assert moved.insns == build(ops_b).insns
    assert moved.stats["fences"] == 1


def test_chosen_schedules_are_kept_on_disk(tmp_path, monkeypatch):
    """A second process (here: cleared in-memory caches) reads the choice back instead of
    searching again; a corrupt entry is searched again and rewritten."""
    from llmchip.sw import compile as comp

    monkeypatch.setenv("LLMCHIP_CACHE", str(tmp_path))
    comp._schedule_cache.cache_clear()
    comp.choose_schedule.cache_clear()
    try:
        first = comp.choose_schedule(SMALL, 37, 21, 19)
        files = list((tmp_path / "schedules").rglob("*.json"))
        assert len(files) == 1
        comp.choose_schedule.cache_clear()

        def no_search(*args):
            raise AssertionError("searched again")
        monkeypatch.setattr(comp, "search_schedule", no_search)
        assert comp.choose_schedule(SMALL, 37, 21, 19) == first
        monkeypatch.undo()
        monkeypatch.setenv("LLMCHIP_CACHE", str(tmp_path))
        files[0].write_text("{not json")
        comp.choose_schedule.cache_clear()
        assert comp.choose_schedule(SMALL, 37, 21, 19) == first
        assert files[0].read_text().startswith("{\"mg\"")
    finally:
        comp._schedule_cache.cache_clear()
        comp.choose_schedule.cache_clear()
