"""The whole accelerator on Icarus and Verilator: AxiRam as DRAM, AxiLiteMaster on the CSRs.

Random GEMMs of odd shapes through the full path (program in DRAM, doorbell, interrupt,
results in DRAM) with random back-pressure on every AXI channel, bit-exact against the
golden model; hand-written programs; performance counters against values computed from
the program; and faults (illegal opcode, out-of-window DMA, SLVERR/DECERR on read and
write, soft reset in the middle of a program), each ending in the right error code and an
interrupt, followed by a clean run.
"""

import numpy as np
import pytest

from llmchip.config import AcceleratorConfig
from llmchip.sw import golden, isa, perf, regs
from llmchip.sw.compile import Schedule, plan_gemm
from llmchip.tb.accel_run import build_accelerator, gemm_job, read_region, run_job

SIMS = ["icarus", "verilator"]
CONFIGS = {
    "4x4-bus128": AcceleratorConfig(rows=4, cols=4, sp_rows=64, acc_rows=32, param_rows=4,
                                    bus_bits=128),
    "3x5-bus64": AcceleratorConfig(rows=3, cols=5, sp_rows=64, acc_rows=16, param_rows=4,
                                   bus_bits=64),
}
_BUILDS = {}


def accel(name, sim):
    key = (name, sim)
    if key not in _BUILDS:
        _BUILDS[key] = build_accelerator(CONFIGS[name], sim)
    return _BUILDS[key]


def random_plan(cfg, rng, m, k, n, **kw):
    x = golden.random_operands(rng, (m, k))
    w = golden.random_operands(rng, (k, n))
    bias = rng.integers(-5000, 5000, size=n)
    mult, shift = golden.quantize_multiplier(rng.uniform(2e-4, 4e-3, size=n))
    return plan_gemm(cfg, x, w, bias, mult, shift, zero_point=int(rng.integers(-20, 20)),
                     relu=bool(rng.integers(2)), **kw)


def expected_counters(plan) -> dict:
    """Counters the performance model derives from the program alone (exact for these)."""
    res = perf.simulate(plan.program, plan.config)
    return {"PERF_ARRAY_BUSY": res.array_busy, "PERF_MACS": res.macs,
            "PERF_DMA_RD_BYTES": res.dram_read_bytes, "PERF_DMA_WR_BYTES": res.dram_write_bytes}


@pytest.mark.parametrize("sim", SIMS)
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_random_gemms_with_backpressure(name, sim, seed, rng):
    cfg = CONFIGS[name]
    b = accel(name, sim)
    shapes = [(1, 1, 1), (int(rng.integers(2, 12)), int(rng.integers(cfg.rows + 1, 17)),
                          int(rng.integers(cfg.cols + 1, 14)))]
    schedules = set()
    for (m, k, n), m_tile in zip(shapes + shapes[1:], [None, max(1, shapes[1][0] // 2), None],
                                 strict=True):
        plan = random_plan(cfg, rng, m, k, n, m_tile=m_tile)
        schedules.add(plan.schedule)
        res = run_job(b, gemm_job(plan, seed=seed, pause=0.3))
        ph = res["phases"][0]
        y = read_region(ph, plan.y_addr, (m, n))
        np.testing.assert_array_equal(y, plan.expected, err_msg=f"shape {(m, k, n)}")
        assert ph["STATUS"] & 0xFF07 == 0b110, hex(ph["STATUS"])   # idle, done, no error
        assert ph["IRQ_STATUS"] == regs.IRQ_DONE and ph["irq_line"] == 1
        for counter, value in expected_counters(plan).items():
            assert ph[counter] == value, counter
        assert ph["PERF_CYCLES"] >= ph["PERF_BUSY"] >= ph["PERF_ARRAY_BUSY"]
    assert schedules == {"resident", "streaming"}
    # Software discovers the configuration from the hardware.
    assert ph["ID"] == regs.ID_MAGIC
    assert regs.fields_of("CFG_ARRAY", ph["CFG_ARRAY"]) == {"rows": cfg.rows, "cols": cfg.cols,
                                                            "dataflow": 0, "dvfs": 0}
    assert regs.fields_of("CFG_WIDTHS", ph["CFG_WIDTHS"]) == {
        "in_width": 8, "acc_width": 32, "bus_bits": cfg.bus_bits}
    assert regs.fields_of("CFG_SP", ph["CFG_SP"]) == {"rows": cfg.sp_rows,
                                                      "banks": cfg.sp_banks}
    assert ph["CFG_SP_ROW"] == cfg.sp_row_bytes and ph["CFG_ACC"] == cfg.acc_rows


def _faulty_job(plan, **kw):
    job = gemm_job(plan, limit=20000, **kw)
    # After the faulty run: soft reset, then the same program again, cleanly.
    job["phases"].append({"kind": "soft_reset", "tail": 0, "after": 1, "limit": 20000,
                          "clear_errors": True, "window": [0, plan.dram_size]})
    job["phases"].append({"kind": "run", "tail": len(plan.program), "limit": 40000,
                          "read": [[plan.y_addr, plan.m * plan.n]]})
    return job


def _check_fault_then_recovery(res, plan, code, index=None):
    bad, reset, good = res["phases"]
    assert (bad["STATUS"] >> 8) & 0xFF == code, hex(bad["STATUS"])
    assert bad["IRQ_STATUS"] & regs.IRQ_ERROR and bad["irq_line"] == 1
    if index is not None:
        assert bad["ERROR_INFO"] == index
    assert reset["STATUS"] & 0b10 and (reset["STATUS"] >> 8) == 0 and reset["IQ_HEAD"] == 0
    np.testing.assert_array_equal(read_region(good, plan.y_addr, (plan.m, plan.n)),
                                  plan.expected)
    assert good["STATUS"] & 0xFF07 == 0b110


@pytest.mark.parametrize("sim", SIMS)
def test_illegal_opcode_then_recovery(sim, seed, rng):
    cfg = CONFIGS["4x4-bus128"]
    plan = random_plan(cfg, rng, 3, 5, 4)
    job = _faulty_job(plan, seed=seed)
    # Phase 1 runs a program whose third instruction is undefined (opcode 0).
    bad = isa.assemble(plan.program[:2] + [0] + plan.program[2:])
    job["phases"][0]["image"] = [[plan.prog_addr + 4096, bad.hex()]]
    job["iq_base"] = plan.prog_addr + 4096
    job["dram_size"] += 8192
    job["dram_window"] = job["dram_size"]
    job["phases"][1]["window"] = [0, job["dram_size"]]
    job["phases"][0]["tail"] = len(plan.program) + 1
    # The clean rerun uses the good program at the same ring base.
    job["phases"][2]["image"] = [[plan.prog_addr + 4096, isa.assemble(plan.program).hex()]]
    res = run_job(accel("4x4-bus128", sim), job)
    _check_fault_then_recovery(res, plan, regs.ErrorCode.ILLEGAL_OPCODE, index=2)


@pytest.mark.parametrize("sim", SIMS)
@pytest.mark.parametrize("fault", ["window", "read-slverr", "read-decerr", "write-slverr",
                                   "write-decerr"])
def test_dma_faults_then_recovery(sim, fault, seed, rng):
    cfg = CONFIGS["4x4-bus128"]
    plan = random_plan(cfg, rng, 4, 6, 5)
    job = _faulty_job(plan, seed=seed, pause=0.2)
    x_addr = min(plan.image.regions)
    if fault == "window":
        # The window starts above X: the first activation load is refused.
        job["dram_base"] = 64
        job["dram_window"] = plan.dram_size - 64
        code = regs.ErrorCode.DMA_WINDOW
    else:
        where, kind = fault.split("-")
        addr = x_addr if where == "read" else plan.y_addr
        job["error_regions"] = [[addr, 16, kind]]
        code = {"slverr": regs.ErrorCode.DMA_SLVERR, "decerr": regs.ErrorCode.DMA_DECERR}[kind]
    res = run_job(accel("4x4-bus128", sim), job)
    _check_fault_then_recovery(res, plan, code)


@pytest.mark.parametrize("sim", SIMS)
def test_soft_reset_mid_program_then_clean_run(sim, seed, rng):
    cfg = CONFIGS["4x4-bus128"]
    plan = random_plan(cfg, rng, 8, 12, 9, m_tile=4)
    job = gemm_job(plan, seed=seed, pause=0.3)
    job["phases"] = [
        {"kind": "soft_reset", "tail": len(plan.program), "after": 150, "limit": 20000},
        {"kind": "run", "tail": len(plan.program), "limit": 60000,
         "read": [[plan.y_addr, plan.m * plan.n]]},
    ]
    res = run_job(accel("4x4-bus128", sim), job)
    reset, good = res["phases"]
    assert reset["IQ_HEAD"] == 0 and reset["STATUS"] & 0b10
    np.testing.assert_array_equal(read_region(good, plan.y_addr, (plan.m, plan.n)),
                                  plan.expected)
    assert good["IRQ_STATUS"] == regs.IRQ_DONE


@pytest.mark.parametrize("sim", SIMS)
def test_hand_written_program_accumulator_load_fence_store(sim, seed, rng):
    """LOAD into the accumulator (a bias preloaded as int32 rows), MATMUL accumulating onto
    it, FENCE, STORE with unit scale: Y = X @ W + preload, saturated to int8."""
    x = golden.random_operands(rng, (3, 4), extremes=False) // 16
    w = golden.random_operands(rng, (4, 4), extremes=False) // 16
    pre = rng.integers(-60, 60, size=(3, 4))
    base_x, base_w, base_a, base_p, base_y, base_prog = 0, 64, 128, 256, 320, 512
    params = (np.zeros(4, "<i4").tobytes() + np.full(4, 1 << 30, "<u4").tobytes()
              + np.full(4, 30, "u1").tobytes())      # scale (2**30) / 2**30 = 1
    prog = [
        isa.encode("config", zero_point=0, relu=0),
        isa.encode("load", mem=isa.Mem.PARAMS, rows=1, row_bytes=36, dram_addr=base_p,
                   dram_stride=36, sram_addr=1),
        isa.encode("load", mem=isa.Mem.ACCUMULATOR, rows=3, row_bytes=16, dram_addr=base_a,
                   dram_stride=16, sram_addr=5),
        isa.encode("load", mem=isa.Mem.SCRATCHPAD, rows=3, row_bytes=4, dram_addr=base_x,
                   dram_stride=4, sram_addr=0),
        isa.encode("load", mem=isa.Mem.SCRATCHPAD, rows=4, row_bytes=4, dram_addr=base_w,
                   dram_stride=4, sram_addr=40),
        isa.encode("fence"),
        isa.encode("load_w", sp_addr=40, sp_stride=1),
        isa.encode("matmul", sp_addr=0, sp_stride=1, rows=3, acc_addr=5, accumulate=1),
        isa.encode("fence"),
        isa.encode("store", rows=3, cols=4, acc_addr=5, param_addr=1, dram_addr=base_y,
                   dram_stride=4),
        isa.encode("end"),
    ]
    image = [[base_x, x.astype(np.int8).tobytes().hex()],
             [base_w, w.astype(np.int8).tobytes().hex()],
             [base_a, pre.astype("<i4").tobytes().hex()],
             [base_p, params.hex()], [base_prog, isa.assemble(prog).hex()]]
    job = {"seed": seed, "pause": 0.2, "dram_size": 4096, "dram_base": 0,
           "dram_window": 4096, "iq_base": base_prog, "iq_size": 32, "image": image,
           "phases": [{"kind": "run", "tail": len(prog), "limit": 20000,
                       "read": [[base_y, 12]]}]}
    ph = run_job(accel("4x4-bus128", sim), job)["phases"][0]
    want = np.clip(golden.matmul(x, w) + pre, -128, 127)
    np.testing.assert_array_equal(read_region(ph, base_y, (3, 4)), want)
    assert ph["STATUS"] & 0xFF07 == 0b110


@pytest.mark.parametrize("sim", SIMS)
def test_instruction_ring_wraps_across_doorbells(sim, seed, rng):
    """Two programs back to back in a small ring: the second wraps past the ring's end."""
    cfg = CONFIGS["4x4-bus128"]
    ring = 8192
    first = random_plan(cfg, rng, 3, 5, 4)
    second = random_plan(cfg, rng, 2, 7, 6, base=ring + 4096)   # data above the ring
    n1, n2 = len(first.program), len(second.program)
    size = n1 + n2 - 2                 # the second program wraps: it ends in slot 1
    assert size > max(n1, n2)

    def slots(program, start):
        return [[ring + 16 * ((start + i) % size), isa.assemble([w]).hex()]
                for i, w in enumerate(program)]

    job = gemm_job(first, seed=seed, pause=0.2)
    job["dram_size"] = job["dram_window"] = second.dram_size
    job["iq_base"], job["iq_size"] = ring, size
    job["image"] += slots(first.program, 0)
    job["phases"].append({
        "kind": "run", "tail": (n1 + n2) % size, "limit": 40000,
        "image": [[a, d.hex()] for a, d in second.image.regions.items()
                  if a != second.prog_addr] + slots(second.program, n1),
        "read": [[second.y_addr, second.m * second.n]]})
    first_ph, second_ph = run_job(accel("4x4-bus128", sim), job)["phases"]
    np.testing.assert_array_equal(read_region(first_ph, first.y_addr, (3, 4)), first.expected)
    np.testing.assert_array_equal(read_region(second_ph, second.y_addr, (2, 6)),
                                  second.expected)
    assert second_ph["IQ_HEAD"] == (n1 + n2) % size
    assert second_ph["STATUS"] & 0xFF07 == 0b110


def test_mapping_and_pipeline_options_on_the_accelerator(seed, rng):
    """Packed multipliers with three pipeline stages (``mult2+acc``): the same program is
    bit-exact, and it takes exactly the three cycles of extra array latency more (its last
    results, the STORE after them and END all come that much later); the performance
    model's difference is off by no more than that latency."""
    base = CONFIGS["4x4-bus128"]
    cfg = base.replace(mult="packed", pipeline="mult2+acc")
    assert cfg.latency == base.latency + 3
    # A fixed schedule (the one chosen for this shape by the model of the time): the
    # model's choice follows its constants, and the exact difference is a property of
    # the program.
    plan = random_plan(base, rng, 9, 11, 10, schedule=Schedule(mg=9, g=1, kc=3, ms=9,
                                                                first_ms=4))
    cycles = {}
    for c, b in ((base, accel("4x4-bus128", "icarus")), (cfg, build_accelerator(cfg, "icarus"))):
        ph = run_job(b, gemm_job(plan, seed=seed))["phases"][0]
        np.testing.assert_array_equal(read_region(ph, plan.y_addr, (9, 10)), plan.expected)
        assert ph["STATUS"] & 0xFF07 == 0b110, hex(ph["STATUS"])
        cycles[c] = (ph["PERF_CYCLES"], perf.simulate(plan.program, c).cycles)
    (hw0, model0), (hw1, model1) = cycles[base], cycles[cfg]
    assert hw1 - hw0 == cfg.latency - base.latency, cycles
    assert abs((hw1 - hw0) - (model1 - model0)) <= cfg.latency - base.latency, cycles
