"""Execute unit with scratchpad and accumulator, in Amaranth's simulator."""

import numpy as np
import pytest
from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.sim import Simulator

from llmchip.config import AcceleratorConfig
from llmchip.rtl.accumulator import Accumulator
from llmchip.rtl.execute import ExecError, ExecuteUnit, operand_terms
from llmchip.rtl.scratchpad import Scratchpad
from llmchip.sw import golden, isa


class ExecHarness(wiring.Component):
    """Scratchpad + execute unit + accumulator, with their free ports exposed.

    With ``prechecked``, the unit takes its dispatch flags beside each instruction (as in
    the accelerator, where its queue adds them): ``word`` is the instruction.
    """

    def __init__(self, cfg, sp_rows=64, acc_rows=32, prechecked=False):
        self.cfg, self.sp_rows, self.acc_rows = cfg, sp_rows, acc_rows
        self.sp = Scratchpad(max(cfg.rows, cfg.cols), sp_rows, 2)
        self.acc = Accumulator(cfg.cols, acc_rows, cfg.acc_width)
        self.exe = ExecuteUnit(cfg, sp_rows, acc_rows, prechecked=prechecked)
        self.word = Signal(isa.INSN_BITS) if prechecked else self.exe.insn.payload
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.sp, m.submodules.acc, m.submodules.exe = self.sp, self.acc, self.exe
        wiring.connect(m, self.exe.sp_a_req, self.sp.a_req)
        wiring.connect(m, self.sp.a_resp, self.exe.sp_a_resp)
        wiring.connect(m, self.exe.sp_b_req, self.sp.b_req)
        wiring.connect(m, self.sp.b_resp, self.exe.sp_b_resp)
        wiring.connect(m, self.exe.acc_w, self.acc.w)
        if self.exe.prechecked:
            checked = Cat(self.word, operand_terms(self.cfg, self.word))
            m.d.comb += self.exe.insn.payload.eq(Cat(self.word, self.exe.predecode(checked)))
        return m


def run(cfg, sp_image, program, *, acc_rows=32, sp_rows=64, read_rows=0, tokens=None,
        max_cycles=5000, prechecked=False):
    """Load the scratchpad, run the program, return (acc rows, stats)."""
    dut = ExecHarness(cfg, sp_rows, acc_rows, prechecked)
    exe, sp, acc = dut.exe, dut.sp, dut.acc
    out = {"rows": [], "busy_cycles": 0, "busy_at": [], "cycles": 0, "ld_push": 0, "st_push": 0,
           "tokens": [], "error": None}

    async def bench(ctx):
        for addr, row in sp_image.items():
            ctx.set(sp.w.valid, 1)
            ctx.set(sp.w.payload, {"addr": addr, "data": [int(v) & 0xFF for v in row]})
            await ctx.tick()
        ctx.set(sp.w.valid, 0)
        ctx.set(exe.ld_avail, 1 if tokens is None else 0)
        ctx.set(exe.st_avail, 1 if tokens is None else 0)
        i = 0
        for cycle in range(max_cycles):
            if tokens is not None:
                ctx.set(exe.ld_avail, cycle >= tokens.get("ld_at", 0))
                ctx.set(exe.st_avail, cycle >= tokens.get("st_at", 0))
            ctx.set(exe.insn.valid, i < len(program))
            if i < len(program):
                ctx.set(dut.word, program[i])
            took = i < len(program) and ctx.get(exe.insn.ready)
            if ctx.get(exe.array_busy):
                out["busy_cycles"] += 1
                out["busy_at"].append(cycle)
            out["ld_push"] += ctx.get(exe.ld_push)
            out["st_push"] += ctx.get(exe.st_push)
            for name in ("ld_pop", "st_pop", "ld_push", "st_push"):
                if value := ctx.get(getattr(exe, name)):
                    out["tokens"].append((cycle, name, value))
            if ctx.get(exe.error_valid):
                out["error"] = ExecError(ctx.get(exe.error))
            await ctx.tick()
            i += took
            if i == len(program) and not ctx.get(exe.busy):
                out["cycles"] = cycle + 1
                break
        else:
            raise TimeoutError(f"execute unit busy after {max_cycles} cycles")
        if ctx.get(exe.error_valid):
            out["error"] = ExecError(ctx.get(exe.error))
        for r in range(read_rows):
            ctx.set(acc.r_req.valid, 1)
            ctx.set(acc.r_req.payload, r)
            await ctx.tick()
            ctx.set(acc.r_req.valid, 0)
            await ctx.tick().repeat(Accumulator.READ_LATENCY - 1)
            assert ctx.get(acc.r_resp.valid)
            out["rows"].append(list(ctx.get(acc.r_resp.payload)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return np.array(out["rows"], dtype=np.int64).reshape(-1, cfg.cols), out


def matmul_program(cfg, x, w, *, m_stride=1, acc=0):
    """Scratchpad image and program for x @ w with K split over weight tiles."""
    R, C = cfg.rows, cfg.cols
    m, k = x.shape
    kb = -(-k // R)
    xp = np.zeros((m, kb * R), dtype=np.int64)
    xp[:, :k] = x
    wp = np.zeros((kb * R, C), dtype=np.int64)
    wp[:k, : w.shape[1]] = w
    image, prog = {}, []
    w_base = 32
    for b in range(kb):
        for r in range(R):
            image[w_base + b * R + r] = wp[b * R + r]
        for i in range(m):
            image[b * m + i] = xp[i, b * R:(b + 1) * R]
        prog.append(isa.encode("load_w", sp_addr=w_base + b * R, sp_stride=1))
        prog.append(isa.encode("matmul", sp_addr=b * m, sp_stride=m_stride, rows=m,
                               acc_addr=acc, accumulate=int(b > 0)))
    return image, prog


@pytest.mark.parametrize("rows, cols, m, k", [(2, 3, 5, 6), (4, 4, 3, 11), (1, 1, 1, 3),
                                              (3, 2, 7, 3)])
def test_matmul_over_k_tiles_is_exact(rows, cols, m, k, rng):
    cfg = AcceleratorConfig(rows=rows, cols=cols)
    x = golden.random_operands(rng, (m, k))
    w = golden.random_operands(rng, (k, cols))
    image, prog = matmul_program(cfg, x, w)
    got, stats = run(cfg, image, prog, read_rows=m)
    np.testing.assert_array_equal(got, golden.matmul(x, w))
    assert stats["busy_cycles"] == m * len(prog) // 2
    assert stats["error"] is None


def test_tiles_stream_back_to_back(rng):
    """With T >= rows, the weight loads hide behind the matmuls: the array is busy nearly
    every cycle after the first weight tile."""
    cfg = AcceleratorConfig(rows=2, cols=2)
    x = golden.random_operands(rng, (8, 8))
    w = golden.random_operands(rng, (8, 2))
    image, prog = matmul_program(cfg, x, w)
    got, stats = run(cfg, image, prog, read_rows=8)
    np.testing.assert_array_equal(got, golden.matmul(x, w))
    assert stats["busy_cycles"] == 32
    # Every cycle from the first row to the last carries a row: no bubble between tiles.
    assert stats["busy_at"] == list(range(stats["busy_at"][0], stats["busy_at"][0] + 32))
    # Fill (dispatch, scratchpad and FIFO latency, the first R weight rows) before the first
    # row, and drain (array latency plus the accumulator write) after the last.
    assert stats["busy_at"][0] <= cfg.rows + 6
    assert stats["cycles"] - stats["busy_at"][-1] - 1 <= cfg.latency + 4


@pytest.mark.parametrize("insn, err", [
    (isa.encode("matmul", sp_addr=0, rows=0, acc_addr=0), ExecError.BAD_OPERAND),
    (isa.encode("matmul", sp_addr=60, sp_stride=2, rows=3, acc_addr=0), ExecError.BAD_OPERAND),
    (isa.encode("matmul", sp_addr=0, rows=4, acc_addr=30), ExecError.BAD_OPERAND),
    (isa.encode("load_w", sp_addr=63, sp_stride=1), ExecError.BAD_OPERAND),
    # K loops are checked whole: weights, activations of the last step, accumulator rows.
    (isa.encode("matmul", sp_addr=0, rows=2, acc_addr=0, k_steps=3, w_addr=60),
     ExecError.BAD_OPERAND),
    # One weight row past the end (59 + 3 * 2 = 65 > 64).
    (isa.encode("matmul", sp_addr=0, rows=2, acc_addr=0, k_steps=3, w_addr=59),
     ExecError.BAD_OPERAND),
    (isa.encode("matmul", sp_addr=40, rows=2, acc_addr=0, k_steps=3, w_addr=0, a_step=12),
     ExecError.BAD_OPERAND),
    (isa.encode("matmul", sp_addr=0, rows=4, acc_addr=29, k_steps=2, w_addr=0),
     ExecError.BAD_OPERAND),
    (isa.encode("matmul", sp_addr=0, rows=0, acc_addr=0, k_steps=2, w_addr=0),
     ExecError.BAD_OPERAND),
    (isa.encode("matmul", sp_addr=0, rows=1, acc_addr=0, k_steps=4095, w_addr=0),
     ExecError.BAD_OPERAND),
    (isa.encode("matmul", sp_addr=0, rows=1, acc_addr=0, k_steps=2, w_addr=0, a_step=65535),
     ExecError.BAD_OPERAND),
    (isa.encode("store", rows=1, cols=1), ExecError.BAD_OPCODE),
])
@pytest.mark.parametrize("prechecked", [False, True])
def test_bad_instructions_are_refused(insn, err, prechecked):
    cfg = AcceleratorConfig(rows=2, cols=2)
    _, stats = run(cfg, {}, [insn], prechecked=prechecked)
    assert stats["error"] is err
    assert stats["busy_cycles"] == 0


def test_tokens_gate_start_and_are_pushed_on_completion(rng):
    cfg = AcceleratorConfig(rows=2, cols=2)
    x = golden.random_operands(rng, (3, 2))
    w = golden.random_operands(rng, (2, 2))
    image = {0: x[0], 1: x[1], 2: x[2], 8: w[0], 9: w[1]}
    prog = [isa.encode("load_w", sp_addr=8, sp_stride=1, pop_prev=True),
            isa.encode("matmul", sp_addr=0, sp_stride=1, rows=3, acc_addr=4, pop_next=True,
                       push_prev=True, push_next=True)]
    got, stats = run(cfg, image, prog, read_rows=7, tokens={"ld_at": 40, "st_at": 60})
    np.testing.assert_array_equal(got[4:7], golden.matmul(x, w))
    assert stats["ld_push"] == 1 and stats["st_push"] == 1
    assert stats["cycles"] > 60  # nothing could start before the store token arrived


def test_os_dataflow_rejected():
    with pytest.raises(ValueError, match="dataflow must be 'ws', not 'os'"):
        ExecuteUnit(AcceleratorConfig(dataflow="os"), 16, 16)


# -- K loops (MATMUL with k_steps >= 1) ------------------------------------------------


def reference(cfg, sp, program, acc_rows):
    """NumPy model of the execute unit: the accumulator after ``program``.

    ``sp`` holds the scratchpad as signed lanes, one row per scratchpad row. Weight tiles
    pair with MATMULs in order, as in the array: a LOAD_W queues a tile, a plain MATMUL
    uses the oldest queued tile, and each step of a K loop queues and uses its own.
    """
    R = cfg.rows
    acc = np.zeros((acc_rows, cfg.cols), dtype=np.int64)
    tiles = []

    def stream(a_rows, acc_addr, accumulate):
        y = golden.matmul(sp[a_rows, :R], tiles.pop(0), acc_width=cfg.acc_width)
        out = acc_addr + np.arange(len(a_rows))
        acc[out] = golden.wrap(acc[out] + y, cfg.acc_width) if accumulate else y

    for word in program:
        insn = isa.decode(word)
        f = insn.fields
        if insn.op is isa.Opcode.LOAD_W:
            tiles.append(sp[f["sp_addr"] + f["sp_stride"] * np.arange(R), :cfg.cols])
            continue
        a_rows = f["sp_addr"] + f["sp_stride"] * np.arange(f["rows"])
        if f["k_steps"] == 0:
            stream(a_rows, f["acc_addr"], f["accumulate"])
        for step in range(f["k_steps"]):
            tiles.append(sp[f["w_addr"] + step * R + np.arange(R), :cfg.cols])
            stream(a_rows + step * f["a_step"], f["acc_addr"], f["accumulate"] or step > 0)
    return acc


def random_loop(cfg, rng, rows, *, sp_rows, acc_rows, **flags):
    """A random in-range K loop over ``rows`` activation rows."""
    R = cfg.rows
    k_steps = int(rng.integers(1, 5))
    sp_stride = int(rng.choice([1, 2]))
    a_step = int(rng.choice([0, 1, rows, rows * sp_stride, rng.integers(0, 9)]))
    span = (k_steps - 1) * a_step + (rows - 1) * sp_stride
    return isa.encode("matmul", sp_addr=int(rng.integers(0, sp_rows - span)),
                      sp_stride=sp_stride, rows=rows,
                      acc_addr=int(rng.integers(0, acc_rows - rows + 1)),
                      accumulate=int(rng.integers(2)), k_steps=k_steps,
                      w_addr=int(rng.integers(0, sp_rows - k_steps * R + 1)), a_step=a_step,
                      **flags)


def random_pair(cfg, rng, *, sp_rows, acc_rows):
    """A plain LOAD_W (any stride) and the MATMUL (k_steps = 0) that uses its tile."""
    R = cfg.rows
    w_stride = int(rng.integers(1, 4))
    rows = int(rng.integers(1, 2 * R + 3))
    return [isa.encode("load_w", sp_addr=int(rng.integers(0, sp_rows - (R - 1) * w_stride)),
                       sp_stride=w_stride),
            isa.encode("matmul", sp_addr=int(rng.integers(0, sp_rows - rows + 1)), sp_stride=1,
                       rows=rows, acc_addr=int(rng.integers(0, acc_rows - rows + 1)),
                       accumulate=int(rng.integers(2)))]


def random_scratchpad(cfg, rng, sp_rows):
    return golden.random_operands(rng, (sp_rows, max(cfg.rows, cfg.cols)))


@pytest.mark.parametrize("rows, cols, prechecked", [(1, 1, False), (2, 3, False), (3, 2, True),
                                                    (4, 4, False), (4, 4, True)])
def test_k_loops_match_numpy(rows, cols, prechecked, rng):
    """Random K loops (rows below, at and above the array's rows; several k_steps, a_step
    and strides; accumulate on and off) interleaved with plain LOAD_W/MATMUL pairs."""
    cfg = AcceleratorConfig(rows=rows, cols=cols)
    sp_rows, acc_rows = 128, 32
    sp = random_scratchpad(cfg, rng, sp_rows)
    shapes = [r for r in (rows - 1, rows, rows + 1, 2 * rows + 3) if r >= 1]
    program = []
    for t in list(shapes) + list(rng.permutation(shapes)):
        if rng.integers(2):
            program += random_pair(cfg, rng, sp_rows=sp_rows, acc_rows=acc_rows)
        program.append(random_loop(cfg, rng, int(t), sp_rows=sp_rows, acc_rows=acc_rows))
    program += random_pair(cfg, rng, sp_rows=sp_rows, acc_rows=acc_rows)
    got, stats = run(cfg, dict(enumerate(sp)), program, sp_rows=sp_rows, acc_rows=acc_rows,
                     read_rows=acc_rows, max_cycles=20000, prechecked=prechecked)
    assert stats["error"] is None
    np.testing.assert_array_equal(got, reference(cfg, sp, program, acc_rows))
    matmuls = [i.fields for i in map(isa.decode, program) if i.op is isa.Opcode.MATMUL]
    assert stats["busy_cycles"] == sum(max(1, f["k_steps"]) * f["rows"] for f in matmuls)


def loop_and_sequence(cfg, rows, k_steps, w_addr=128, **flags):
    """A K loop and the explicit LOAD_W/MATMUL sequence it stands for (activations from row
    0, weights from ``w_addr``)."""
    R = cfg.rows
    a_step = rows
    loop = [isa.encode("matmul", sp_addr=0, sp_stride=1, rows=rows, acc_addr=0, k_steps=k_steps,
                       w_addr=w_addr, a_step=a_step, **flags)]
    pops = {f: v for f, v in flags.items() if f.startswith("pop")}
    pushes = {f: v for f, v in flags.items() if f.startswith("push")}
    seq = []
    for step in range(k_steps):
        seq.append(isa.encode("load_w", sp_addr=w_addr + step * R, sp_stride=1,
                              **(pops if step == 0 else {})))
        seq.append(isa.encode("matmul", sp_addr=step * a_step, sp_stride=1, rows=rows,
                              acc_addr=0, accumulate=int(step > 0),
                              **(pushes if step == k_steps - 1 else {})))
    return loop, seq


@pytest.mark.parametrize("rows", [1, 4, 16])
@pytest.mark.parametrize("k_steps", [1, 3, 8])
def test_k_loop_runs_like_the_explicit_sequence(rows, k_steps, rng):
    """A loop issues the sequence's micro-operations at the sequence's cycles: same results,
    same array-busy cycles, same total."""
    cfg = AcceleratorConfig(rows=4, cols=4)
    sp = random_scratchpad(cfg, rng, 256)
    loop, seq = loop_and_sequence(cfg, rows, k_steps)
    got_loop, s_loop = run(cfg, dict(enumerate(sp)), loop, sp_rows=256, read_rows=rows)
    got_seq, s_seq = run(cfg, dict(enumerate(sp)), seq, sp_rows=256, read_rows=rows)
    np.testing.assert_array_equal(got_loop, reference(cfg, sp, loop, 32)[:rows])
    np.testing.assert_array_equal(got_loop, got_seq)
    assert s_loop["cycles"] == s_seq["cycles"]
    assert s_loop["busy_at"] == s_seq["busy_at"]
    # One step every max(rows, R) cycles: with rows >= R the array takes a row every cycle
    # (the next tile's weights load while the current tile streams); with rows < R the
    # weight port's R cycles per tile bound it. Weights and activations are in different
    # scratchpad banks, so no bank conflict delays the weight reads.
    first = s_loop["busy_at"][0]
    assert s_loop["busy_at"] == [first + s * max(rows, cfg.rows) + t
                                 for s in range(k_steps) for t in range(rows)]


def test_k_loop_pops_once_and_pushes_once_at_the_end(rng):
    cfg = AcceleratorConfig(rows=2, cols=2)
    sp = random_scratchpad(cfg, rng, 256)
    flags = {"pop_prev": True, "pop_next": True, "push_prev": True, "push_next": True}
    loop, seq = loop_and_sequence(cfg, 3, 4, **flags)
    tokens = {"ld_at": 40, "st_at": 60}
    got, stats = run(cfg, dict(enumerate(sp)), loop, sp_rows=256, read_rows=3, tokens=tokens)
    _, s_seq = run(cfg, dict(enumerate(sp)), seq, sp_rows=256, read_rows=3, tokens=tokens)
    np.testing.assert_array_equal(got, reference(cfg, sp, loop, 32)[:3])
    # Both tokens are popped when the later one arrives, nothing starts before.
    assert stats["tokens"][:2] == [(60, "ld_pop", 1), (60, "st_pop", 1)]
    assert stats["busy_at"][0] > 60
    # One push each, once the last result row of the last step is readable: the unit's
    # last busy cycle, after the last row left the array.
    end = stats["cycles"] - 1
    assert stats["tokens"][2:] == [(end, "ld_push", 1), (end, "st_push", 1)]
    assert end > stats["busy_at"][-1] + cfg.latency
    assert stats["tokens"] == s_seq["tokens"]


@pytest.mark.parametrize("prechecked", [False, True])
def test_k_loop_ending_at_the_scratchpad_end_runs(prechecked, rng):
    """The range check is exact: a loop whose last weight row and last activation row are
    the scratchpad's last row is accepted."""
    cfg = AcceleratorConfig(rows=2, cols=2)
    sp = random_scratchpad(cfg, rng, 64)
    loop = [isa.encode("matmul", sp_addr=43, sp_stride=2, rows=3, acc_addr=29, k_steps=3,
                       w_addr=58, a_step=8)]          # 43 + 2 * 8 + 2 * 2 = 63
    got, stats = run(cfg, dict(enumerate(sp)), loop, read_rows=32, prechecked=prechecked)
    assert stats["error"] is None
    np.testing.assert_array_equal(got, reference(cfg, sp, loop, 32))


def test_busy_until_the_result_is_readable(rng):
    """`busy` stays up while a row passes through the activation FIFO (a buffered FIFO shows
    a row on r_rdy a cycle after counting it): the harness stops at the first idle cycle
    and must read the result."""
    cfg = AcceleratorConfig(rows=2, cols=2)
    x = golden.random_operands(rng, (1, 2))
    w = golden.random_operands(rng, (2, 2))
    image = {0: x[0], 40: w[0], 41: w[1]}
    prog = [isa.encode("load_w", sp_addr=40, sp_stride=1),
            isa.encode("matmul", sp_addr=0, rows=1, acc_addr=4, pop_next=True)]
    got, stats = run(cfg, image, prog, read_rows=5, tokens={"st_at": 30})
    np.testing.assert_array_equal(got[4:], golden.matmul(x, w))


def test_load_w_pushes_when_its_tile_is_in_the_array(rng):
    """The weight feeder takes the next LOAD_W before the current tile has entered the array;
    each LOAD_W still pushes when its own tile's last row has."""
    cfg = AcceleratorConfig(rows=4, cols=4)
    sp = random_scratchpad(cfg, rng, 64)
    prog = [isa.encode("load_w", sp_addr=32, sp_stride=1, push_prev=True),
            isa.encode("matmul", sp_addr=0, rows=6, acc_addr=0),
            isa.encode("load_w", sp_addr=36, sp_stride=1, push_next=True),
            isa.encode("matmul", sp_addr=6, rows=6, acc_addr=0, accumulate=1)]
    got, stats = run(cfg, dict(enumerate(sp)), prog, read_rows=6)
    np.testing.assert_array_equal(got, reference(cfg, sp, prog, 32)[:6])
    start = stats["busy_at"][0]
    # The first tile is complete before its first row streams; the second loads into the
    # shadow weights from that cycle on, one row per cycle.
    (c1, n1, _), (c2, n2, _) = stats["tokens"]
    assert (n1, n2) == ("ld_push", "st_push")
    assert c1 < start and c2 == start + cfg.rows - 1
