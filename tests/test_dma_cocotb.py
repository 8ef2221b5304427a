"""The generated AxiDma on Icarus and Verilator, with cocotbext-axi's AxiRam as DRAM.

Each (simulator, data width) is compiled once per session (and cached on disk by its
Verilog). Each run sends random 2D reads and writes under random back-pressure on every
AXI channel and every stream, with SLVERR and DECERR regions, commands outside the window
and malformed commands, and checks data, completions and DRAM byte for byte; one run per
build also times a long transfer with no back-pressure.
"""

import subprocess

import pytest

from llmchip.rtl.dma import DmaConfig
from llmchip.rtl.generate import LINT_WAIVERS
from llmchip.tb import toolchain
from llmchip.tb.dma_build import MODULE, build_dma, dma_verilog, random_command, row_beats, run_dma

BASE = 0x8000_0000                  # the window (and the initialized DRAM)
SIZE = 0x1_0000
READS = (BASE, BASE + SIZE // 2)    # reads and writes run concurrently on separate halves
WRITES = (BASE + SIZE // 2, BASE + SIZE)
SLVERR = [[BASE + 0x2100, BASE + 0x2140], [BASE + 0x9100, BASE + 0x9140]]
DECERR = [[BASE + 0x5300, BASE + 0x5308], [BASE + 0xC300, BASE + 0xC308]]
THROUGHPUT_BEATS = 512

BUILDS = [("verilator", 64), ("verilator", 128), ("verilator", 256), ("icarus", 128)]

_BUILDS: dict = {}


@pytest.fixture(scope="session")
def dma_build():
    """Return ``get(config, sim)``: a DMA build made at most once per session."""
    def get(config, sim):
        key = (config, sim)
        if key not in _BUILDS:
            _BUILDS[key] = build_dma(config, sim)
        return _BUILDS[key]

    return get


def make_job(rng, config: DmaConfig, *, seed: int, n: int, bus_pause: float,
             stream_pause: float, throughput: bool) -> dict:
    B, mb = config.beat_bytes, config.max_burst
    reads = [list(random_command(rng, *READS, B, mb)) for _ in range(n)]
    writes = [list(random_command(rng, *WRITES, B, mb)) for _ in range(n)]
    # Commands that meet the error regions, the window's edges, and malformed ones.
    reads += [[SLVERR[0][0] - 70, 2, 90, 0x200], [DECERR[0][0] - 5, 1, 12, 0],
              [SLVERR[0][0] - 8, 2, 16, DECERR[0][0] - SLVERR[0][0]],
              [BASE - 16, 1, 32, 0], [BASE + SIZE - 8, 2, 8, 8], [BASE, 0, 8, 8]]
    writes += [[SLVERR[1][0] - 3, 1, 40, 0], [DECERR[1][0] - 100, 2, 101, 0x180],
               [BASE + SIZE - 4, 1, 5, 0], [WRITES[0], 3, 0, 0], [WRITES[1] - 24, 3, 8, 8]]
    rng.shuffle(reads)
    rng.shuffle(writes)
    beats = sum(c[1] * row_beats(c[2], B) + c[1] for c in reads + writes)
    max_cycles = int(4 * beats / (1 - max(bus_pause, stream_pause))) + 2000
    return {"seed": seed, "window": [BASE, SIZE], "mem": [BASE, SIZE],
            "reads": reads, "writes": writes, "slverr": SLVERR, "decerr": DECERR,
            "bus_pause": bus_pause, "stream_pause": stream_pause,
            "throughput_beats": THROUGHPUT_BEATS if throughput else 0,
            "max_cycles": max_cycles}


@pytest.mark.parametrize("sim, data_width", BUILDS,
                         ids=[f"{sim}-{w}" for sim, w in BUILDS])
def test_generated_dma(sim, data_width, seed, rng, dma_build):
    config = DmaConfig(data_width=data_width, max_burst=8, max_outstanding=4)
    b = dma_build(config, sim)
    # Heavy back-pressure everywhere, then a lighter run that also measures throughput.
    for bus_pause, stream_pause, throughput in ((0.5, 0.4, False), (0.2, 0.1, True)):
        job = make_job(rng, config, seed=seed, n=40, bus_pause=bus_pause,
                       stream_pause=stream_pause, throughput=throughput)
        res = run_dma(b, job)
        # The bench checked everything byte for byte; here: every outcome was exercised.
        assert set(res["rd_dones"]) == set(res["wr_dones"]) == {0, 1, 2, 3, 4}
        assert 1 < res["max_ar_beats"] <= config.max_burst
        assert 1 < res["max_aw_beats"] <= config.max_burst
        seed += 1
    t = res["throughput"]
    print(f"{sim} {data_width}-bit: read {t['read']}, write {t['write']}")
    # A long transfer streams at close to one beat per cycle.
    assert t["read"]["cycles_per_beat"] < 1.1 and t["write"]["cycles_per_beat"] < 1.1


@pytest.mark.parametrize("params", [
    dict(),
    dict(data_width=32, max_burst=1, max_outstanding=1),
    dict(addr_width=64, id_width=4, data_width=512, max_burst=64, max_outstanding=8),
], ids=["default", "smallest", "widest"])
def test_verilator_lint_wall(tmp_path, params):
    """`verilator --lint-only -Wall` with the kept waivers reports nothing."""
    exe = toolchain.require("verilator")
    path = tmp_path / f"{MODULE}.v"
    path.write_text(dma_verilog(DmaConfig(**params)))
    proc = subprocess.run([exe, "--lint-only", "-Wall", str(LINT_WAIVERS), str(path),
                           "--top-module", MODULE], capture_output=True, text=True, timeout=600)
    report = proc.stdout + proc.stderr
    # The abort input is named `abort_req`: plain `abort` is a C library function, which
    # -Wall reports (SYMRSVDWORD).
    assert proc.returncode == 0 and "%Warning" not in report, report[:3000]
