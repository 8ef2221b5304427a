"""Formal proofs of the DVFS controller's safety properties, and of the proof runner itself.

Every property is proved unbounded (k-induction) on the real controller; every mutation
must produce a counterexample from reset, so a proof that passes for a vacuous reason
(an assertion that cannot fire, contradictory assumptions) shows up as a failing test.
"""

from __future__ import annotations

import pytest
from amaranth.asserts import AnySeq
from amaranth.hdl import Assert, Assume, Cover, Elaboratable, Module, Signal

from llmchip.rtl.dvfs_formal import (
    MUTATIONS,
    PROOF_DEPTHS,
    PROPERTIES,
    DvfsFormal,
    formal_params,
    sensor_bound,
)
from llmchip.sw.dvfs import DvfsParams, Governor
from llmchip.tb.formal import (
    FormalError,
    find_solver,
    find_tool,
    prove,
    read_vcd,
    rtlil_text,
)


class _Counter(Elaboratable):
    """Counts 0..9 while ``en`` (free) is high; asserts ``cnt < limit``."""

    def __init__(self, limit: int, *, assume_en: bool = False):
        self.limit, self.assume_en = limit, assume_en

    def elaborate(self, platform):
        m = Module()
        en = Signal()
        cnt = Signal(4)
        m.d.comb += en.eq(AnySeq(1))
        if self.assume_en:
            m.d.comb += Assume(en)
        with m.If(en):
            with m.If(cnt == 9):
                m.d.sync += cnt.eq(0)
            with m.Else():
                m.d.sync += cnt.eq(cnt + 1)
        m.d.comb += Assert(cnt < self.limit, "counter in range")
        m.d.comb += Cover(cnt == 9)
        return m


# -- the runner ---------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["sby", "sat"])
def test_true_property_is_proved(backend):
    result = prove(_Counter(10), mode="prove", depth=4, backend=backend)
    assert result.status == "PASS", result.log[-2000:]
    assert result.passed and not result.failures and not result.trace


@pytest.mark.parametrize("backend", ["sby", "sat"])
def test_false_property_gives_counterexample(backend):
    # cnt < 7 fails once the counter has counted seven times from reset.
    result = prove(_Counter(7, assume_en=True), mode="prove", depth=12, backend=backend)
    assert result.status == "FAIL"
    assert [f.message for f in result.failures if f.kind == "assert"] == ["counter in range"]
    cnt = result.trace["cnt"]
    assert cnt[:8] == list(range(8)), result.format_trace()
    assert result.failures[0].src.startswith(__file__ + ":")
    if backend == "sby":
        assert result.failures[0].step == 7
    assert "counter in range" not in result.format_trace()   # a table, not a log
    assert result.format_trace(["cnt"]).splitlines()[1].startswith("cnt")


def test_bmc_and_cover():
    assert prove(_Counter(7), mode="bmc", depth=6).status == "PASS"  # 7 is out of reach
    bmc = prove(_Counter(7), mode="bmc", depth=10)
    assert bmc.status == "FAIL" and bmc.failures[0].step == 7
    cover = prove(_Counter(10), mode="cover", depth=12)
    assert cover.status == "PASS" and cover.trace["cnt"][-1] == 9
    missed = prove(_Counter(10), mode="cover", depth=5)
    assert missed.status == "FAIL" and missed.failures[0].kind == "cover"
    assert prove(_Counter(7), mode="bmc", depth=6, backend="sat").status == "PASS"
    sat = prove(_Counter(7), mode="bmc", depth=10, backend="sat")
    assert sat.status == "FAIL" and 7 in sat.trace["cnt"]


def test_timeout_is_an_error():
    with pytest.raises(FormalError, match="within 1 s"):
        prove(_Counter(10), mode="bmc", depth=1000, timeout=1)


def test_other_solver_agrees():
    try:
        find_tool("z3")
    except FormalError:
        pytest.skip("z3 is not installed (optional second solver: pip install z3-solver)")
    assert prove(_Counter(10), depth=4, solver="z3").status == "PASS"
    assert prove(_Counter(7), mode="bmc", depth=10, solver="z3").failures[0].step == 7


def test_workdir_keeps_files(tmp_path):
    result = prove(_Counter(7), mode="bmc", depth=10, workdir=tmp_path)
    vcd = tmp_path / "check" / "engine_0" / "trace.vcd"
    assert vcd.exists() and (tmp_path / "design.il").exists()
    assert read_vcd(vcd) == result.trace


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"mode": "live"}, ValueError, "'live'"),
    ({"backend": "abc"}, ValueError, "'abc'"),
    ({"depth": 0}, ValueError, "depth"),
    ({"depth": 2.5}, TypeError, "depth"),
    ({"timeout": 0}, ValueError, "timeout"),
    ({"solver": "cvc5"}, ValueError, "'cvc5'"),
    ({"backend": "sat", "mode": "cover"}, ValueError, "cover"),
    ({"backend": "sat", "solver": "yices"}, ValueError, "'yices'"),
])
def test_prove_rejects_bad_arguments(kwargs, error, match):
    design = _Counter(10)
    with pytest.raises(error, match=match):
        prove(design, **kwargs)
    # Elaborate it anyway: Amaranth warns about elaboratables that never are.
    assert "counter in range" in rtlil_text(design)


def test_solver_is_found():
    assert find_solver() in ("yices", "z3")


# -- the controller -----------------------------------------------------------------------

@pytest.mark.parametrize("prop", [p for p in PROPERTIES if p != "rise"])
def test_property_proved(prop):
    """Unbounded proof (k-induction) of each property on the controller."""
    result = prove(DvfsFormal(prop), mode="prove", depth=PROOF_DEPTHS[prop])
    assert result.status == "PASS", [f.message for f in result.failures]


def test_frequency_never_rises_above_a_cap():
    """An upward transition whose target drops (PROCHOT, a sensor fault, a cap) while it
    raises the voltage never raises the frequency above the new target."""
    result = prove(DvfsFormal("rise"), mode="prove", depth=PROOF_DEPTHS["rise"])
    assert result.status == "PASS", (result.failures, result.format_trace(
        ["prochot_o", "sensor_fault", "dut.target", "dut.f_index", "dut.seq"]))


_MUTANTS = [(p, mut) for p in MUTATIONS for mut in MUTATIONS[p]]
# The shortest counterexample of "sensor" first needs an upward transition to a middle
# point, then a downward one in flight when the sensor fails (step 31).
_BMC_DEPTH = {"sensor": 35}


@pytest.mark.parametrize(("prop", "mutation"), _MUTANTS,
                         ids=[f"{p}-{m}" for p, m in _MUTANTS])
def test_mutation_fails(prop, mutation):
    """A broken observation or assumption yields a real counterexample from reset."""
    result = prove(DvfsFormal(prop, mutation=mutation, strengthen=False), mode="bmc",
                   depth=_BMC_DEPTH.get(prop, 25))
    assert result.status == "FAIL"
    fired = [f for f in result.failures if f.kind == "assert"]
    assert fired and not any(f.message.startswith("invariant") for f in fired)
    assert fired[0].step is not None and result.trace


@pytest.mark.parametrize("prop", [p for p in PROPERTIES if p != "sensor"])
def test_property_proved_default_parameters(prop):
    """The product's reset configuration: six points, 100-1000 tick timers, 32-bit counts.

    ``"sensor"`` is left out: its proof needs the whole fault bound (over a thousand
    cycles here) inside the induction window.
    """
    result = prove(DvfsFormal(prop, DvfsParams()), mode="prove", depth=PROOF_DEPTHS[prop])
    assert result.status == "PASS", [f.message for f in result.failures]


@pytest.mark.parametrize("prop", ["voltage", "sequencer", "rise"])
def test_property_proved_other_parameters(prop):
    """Four points, a prescaler, the conservative governor and the PID power cap on."""
    params = formal_params(
        opps=((200, 800, 600), (300, 850, 1000), (400, 900, 1500), (800, 1100, 4000)),
        tick_cycles=2, governor=Governor.CONSERVATIVE, pc_en=True)
    result = prove(DvfsFormal(prop, params), mode="prove", depth=PROOF_DEPTHS[prop] + 4)
    assert result.status == "PASS", [f.message for f in result.failures]


def test_harness_rejects_bad_arguments():
    with pytest.raises(ValueError, match="'thermal'"):
        DvfsFormal("thermal")
    with pytest.raises(ValueError, match="'late'"):
        DvfsFormal("pll", mutation="late")
    with pytest.raises(TypeError, match="dict"):
        DvfsFormal("pll", {})
    with pytest.raises(TypeError, match="strengthen"):
        DvfsFormal("pll", strengthen=1)
    with pytest.raises(ValueError, match="tick_cycles"):
        DvfsFormal("sensor", formal_params(tick_cycles=2))
    with pytest.raises(ValueError, match="tick_cycles"):
        sensor_bound(formal_params(tick_cycles=2), 2)
    assert sensor_bound(formal_params(), DvfsFormal.ACK_WITHIN) == 13
    assert isinstance(formal_params(), DvfsParams)
