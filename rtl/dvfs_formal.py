"""Formal harness of the DVFS/thermal controller: the safety properties as assertions.

:class:`DvfsFormal` wraps one :class:`~llmchip.rtl.dvfs.DvfsController` whose inputs are
free (``AnySeq``): any temperature, validity, load, PROCHOT, PLL lock and regulator
acknowledge in any cycle, and a reset at any cycle. It asserts one of the safety
properties the specification lists (numbered as in ``docs/dvfs.md``), observed on the
controller's ports (and, for the caps, on its CSR read port), so the proofs hold for the
block as integrated; invariants over its registers help the induction (``strengthen``).
:func:`llmchip.tb.formal.prove` runs it. Each property also has *mutations*: a deliberate
break of the harness's observation or of an environment assumption, under which the
property must fail; they show the assertions are not vacuous.

Properties (``prop``):

``"critical"`` (1)
    A valid reading >= t_crit sets ``thermtrip`` and clears ``clk_en`` within
    :attr:`DvfsFormal.K_CRITICAL` cycles; ``thermtrip`` stays set until reset and keeps
    ``clk_en`` low.
``"voltage"`` (2)
    The frequency in effect never needs more than the voltage the regulator has
    acknowledged (it never rises before ``v_ack``), and a lower voltage is requested
    only once the lower frequency is in effect and the PLL wait is over.
``"pll"`` (3)
    ``clk_en`` is high only while ``pll_lock``; after a frequency change it stays low
    until the PLL has lost and regained lock (or the lock timeout passed); a lock that
    does not come back within ``pll_timeout`` ticks raises the ``pll_timeout`` interrupt.
``"sequencer"`` (4)
    One transition at a time (the frequency and the voltage request each change at most
    once per transition, and the applied index equals the frequency index whenever the
    sequencer is idle); a transition starts at least ``rate_limit`` ticks after the
    previous one ended.
``"caps"`` (5)
    Indices stay inside the table; the arbitrated target never exceeds ``pmax``, the
    step-wise cap or the power cap of the previous cycle (read back through DVFS_CAPS),
    and is the lowest point after a cycle that was hot, critical or sensor-faulty.
``"rise"`` (5, applied side)
    The frequency in effect rises only to a point at or below the caps of the cycle
    before, and never while hot, critical or sensor-faulty. (It may stay above a cap
    that just dropped until the downward transition has run; ``"sensor"`` bounds that.)
``"sensor"`` (7)
    A sensor invalid for more than ``sensor_timeout`` ticks, or a valid reading outside
    [sensor_min, sensor_max], puts the frequency at the lowest point within a bound
    (:func:`sensor_bound`), with the fault flagged and the interrupt raised.
    Assumes a regulator that acknowledges within :attr:`DvfsFormal.ACK_WITHIN` cycles.
``"lock"`` (9)
    With the CSR port free (any write, any address), once DVFS_LOCK is set a locked
    register always reads back the same value until reset.
"""

from __future__ import annotations

from amaranth.asserts import AnyConst, AnySeq
from amaranth.hdl import (
    Array,
    Assert,
    Assume,
    Const,
    Elaboratable,
    Fragment,
    Module,
    Mux,
    ResetSignal,
    Signal,
)

from llmchip.sw import regs
from llmchip.sw.dvfs import LOCKED_REGISTERS, DvfsParams, Reason, SeqState, dvfs_registers

from .dvfs import DvfsController
from .pe import _rejected

__all__ = ["PROPERTIES", "MUTATIONS", "PROOF_DEPTHS", "DvfsFormal", "formal_params",
           "sensor_bound"]

#: Property name -> number in the specification's list.
PROPERTIES = {"critical": 1, "voltage": 2, "pll": 3, "sequencer": 4, "caps": 5,
              "rise": 5, "sensor": 7, "lock": 9}

#: Mutations each property must fail under, with what they break.
MUTATIONS = {
    "critical": {"late": "asserts the trip one cycle before it can happen (K - 1)",
                 "no_reset": "expects the trip to survive a reset"},
    "voltage": {"lying_ack": "the regulator acknowledges before it reaches the voltage"},
    "pll": {"registered_clk_en": "the clock enable goes through one more register"},
    "sequencer": {"rate_plus_one": "expects one tick more than the exact spacing"},
    "caps": {"applied_index": "checks the applied index, which lags the target, "
                              "against the caps"},
    "rise": {"strict": "expects every rise to stay strictly below the caps"},
    "sensor": {"short_bound": "allows one cycle less than the bound",
               "no_ack_bound": "a regulator that may never acknowledge"},
    "lock": {"unlocked_register": "also checks DVFS_PMIN, which the lock does not freeze"},
}

#: Induction length that closes each proof with :func:`formal_params` (measured minimum
#: plus a margin; "sensor" needs its whole bound in the window).
PROOF_DEPTHS = {"critical": 4, "voltage": 3, "pll": 8, "sequencer": 6, "caps": 3,
                "rise": 3, "sensor": 20, "lock": 3}

_OFFSETS = {r.name: (r.offset - regs.DVFS_BASE) >> 2 for r in dvfs_registers()}


def formal_params(**overrides) -> DvfsParams:
    """Return small controller parameters that keep the proofs to seconds.

    Three operating points (so a 2-bit index has one value outside the table), 8-bit
    load counters, one cycle per tick and timing parameters of 1-3 ticks; other fields
    keep their defaults. Keyword arguments override fields.

    Raises
    ------
    TypeError, ValueError
        From :class:`~llmchip.sw.dvfs.DvfsParams`, for an invalid override.
    """
    base = dict(opps=((200, 800, 600), (400, 900, 1500), (800, 1100, 4000)),
                count_width=8, sample_period=2, rate_limit=2, hot_dwell=2,
                sensor_timeout=2, v_settle=1, pll_timeout=3)
    base.update(overrides)
    return DvfsParams(**base)


def sensor_bound(params: DvfsParams, ack_within: int) -> int:
    """Return the cycles from the first bad sensor sample to the lowest frequency.

    ``sensor_timeout + 1`` invalid ticks make the fault; at worst a downward transition
    to a point above the lowest has just started and runs to its end (the PLL lock
    timeout, then the regulator's acknowledge of the lower voltage after up to
    ``ack_within`` cycles), then the rate limit runs out and the next downward
    transition changes the frequency. (An upward transition still raising the voltage
    is aborted at once; one that has raised the frequency only waits for the PLL.) The
    proof shows the bound holds and the ``short_bound`` mutation that one cycle less
    does not.

    Raises
    ------
    ValueError
        If ``params.tick_cycles`` is not 1 (the bound counts ticks as cycles).
    """
    if params.tick_cycles != 1:
        raise ValueError(f"sensor_bound needs tick_cycles == 1, not {params.tick_cycles!r}")
    in_flight = (params.pll_timeout + 1) + (ack_within + 1)
    return (params.sensor_timeout + 1) + in_flight + params.rate_limit + 1


class DvfsFormal(Elaboratable):
    """The controller with free inputs and one property asserted.

    Parameters
    ----------
    prop : str
        A key of :data:`PROPERTIES`.
    params : DvfsParams, optional
        Controller parameters; :func:`formal_params` by default. The registers keep
        their reset values (the CSR port only reads) except for ``"lock"``.
    mutation : str, optional
        A key of ``MUTATIONS[prop]``: the property must then fail.
    strengthen : bool
        Also assert invariants over the controller's registers (found by the names of
        :class:`~llmchip.sw.dvfs.DvfsState`). They are proved with the property, never
        assumed; k-induction needs them because it starts from any state, including
        unreachable ones.

    Raises
    ------
    ValueError
        If ``prop`` or ``mutation`` is unknown, or (at elaboration, with ``strengthen``)
        the controller lacks a register the invariants name.
    TypeError
        If ``params`` is not a :class:`DvfsParams` or ``strengthen`` not a bool.
    """

    #: Cycles from a valid reading >= t_crit to ``thermtrip`` (register, then latch).
    K_CRITICAL = 2
    #: The regulator assumed by ``"sensor"`` acknowledges a request within this many cycles.
    ACK_WITHIN = 2

    def __init__(self, prop: str, params: DvfsParams | None = None, *,
                 mutation: str | None = None, strengthen: bool = True):
        if prop not in PROPERTIES:
            raise _rejected(self, ValueError(f"prop must be one of {', '.join(PROPERTIES)}, "
                                             f"not {prop!r}"))
        if mutation is not None and mutation not in MUTATIONS[prop]:
            raise _rejected(self, ValueError(f"mutation of {prop!r} must be one of "
                                             f"{', '.join(MUTATIONS[prop])}, not {mutation!r}"))
        params = formal_params() if params is None else params
        if not isinstance(params, DvfsParams):
            raise _rejected(self, TypeError(f"params must be a DvfsParams, not "
                                            f"{type(params).__name__}"))
        if not isinstance(strengthen, bool):
            raise _rejected(self, TypeError(f"strengthen must be a bool, not {strengthen!r}"))
        if prop == "sensor":
            try:
                sensor_bound(params, self.ACK_WITHIN)
            except ValueError as exc:
                raise _rejected(self, exc) from None
        self.prop, self.params, self.mutation = prop, params, mutation
        self.strengthen = strengthen
        self._extra = []

    def sensor_bound(self) -> int:
        """Return :func:`sensor_bound` for this harness's parameters."""
        return sensor_bound(self.params, self.ACK_WITHIN)

    def elaborate(self, platform):
        m = Module()
        d = self.dut = DvfsController(self.params)
        frag = Fragment.get(d, platform)
        m.submodules.dut = frag
        self.regs = _registers(frag)
        self._extra = []
        for port in (d.temp_mc, d.temp_valid, d.busy, d.total, d.prochot_i, d.pll_lock,
                     d.v_ack):
            m.d.comb += port.eq(AnySeq(port.shape()))
        rst = ResetSignal()
        # One cycle of history, kept across resets: properties about "the previous
        # cycle" hold only when it was not a reset.
        ok = Signal(reset_less=True)
        prev_rst = Signal(reset_less=True)
        m.d.sync += [ok.eq(1), prev_rst.eq(rst)]
        self.cont = ok & ~prev_rst
        getattr(self, f"_{self.prop}")(m, d)
        if self.strengthen:
            self._invariants(m)
        if self.prop not in ("caps", "rise", "lock"):
            m.d.comb += [d.csr_we.eq(0), d.csr_re.eq(0)]
        return m

    def _reg(self, name):
        try:
            return self.regs[name]
        except KeyError:
            raise ValueError(f"the controller has no register {name!r}, which the "
                             "proof invariants need") from None

    def _invariant(self, cond, message):
        """Record a helper invariant (asserted only with ``strengthen``).

        The assertion carries the caller's source line, by which failures are reported.
        """
        self._extra.append(Assert(cond, f"invariant: {message}", src_loc_at=1))

    def _invariants(self, m):
        p = self.params
        n1 = p.n_opps - 1
        r = self._reg
        seq, goal, index, f, v = r("seq"), r("goal"), r("index"), r("f_index"), r("v_idx")
        up, v_valid, gate, stimer = r("up_dir"), r("v_valid"), r("gate"), r("stimer")
        idle, vw = seq == SeqState.IDLE, seq == SeqState.V_WAIT
        vs, fw = seq == SeqState.V_SETTLE, seq == SeqState.F_WAIT
        inside = 1
        for name in ("goal", "index", "f_index", "v_idx", "target", "gov", "step_cap",
                     "pc_cap"):
            inside = inside & (r(name) <= n1)
        inv = self._invariant
        if self.prop == "lock":
            # Every register can be written there: the sequencer's bounds do not hold,
            # and the lock property does not need them.
            m.d.comb += self._extra
            return
        inv(inside, "every index register inside the table")
        inv(self.cont | idle, "reset leaves the sequencer idle")
        # An aborted upward transition may leave the voltage request above the index.
        inv(~idle | ((f == index) & (v >= index) & ~v_valid & ~gate), "idle")
        inv(~(vw & up) | ((v == goal) & (goal > index) & (f == index) & v_valid & ~gate),
            "raising the voltage")
        inv(~vs | (up & (v == goal) & (goal > index) & (f == index) & ~v_valid & ~gate
                   & (stimer <= p.v_settle)), "settling")
        inv(~(fw & up) | ((f == goal) & (v >= goal) & (goal > index) & gate & ~v_valid
                          & (stimer <= p.pll_timeout)), "relocking upwards")
        inv(~(fw & ~up) | ((f == goal) & (goal < index) & (v >= index) & gate & ~v_valid
                           & (stimer <= p.pll_timeout)), "relocking downwards")
        inv(~(vw & ~up) | ((v == goal) & (f == goal) & (goal < index) & v_valid & ~gate),
            "lowering the voltage")
        inv(r("rate") <= p.rate_limit, "rate-limit timer")
        # A transition starts with the timer at 0 and reloads it only as it completes, so
        # an aborted one leaves the sequencer idle with no wait.
        inv(idle | (r("rate") == 0), "no rate wait during a transition")
        m.d.comb += self._extra

    def _past(self, m, value):
        reg = Signal.like(value, name=f"past_{getattr(value, 'name', 'v')}",
                          reset_less=True)
        m.d.sync += reg.eq(value)
        return reg

    def _mv(self, index):
        return Array(Const(mv, 12) for _, mv, _ in self.params.opps)[index]

    # -- 1 -------------------------------------------------------------------------------
    def _critical(self, m, d):
        p = self.params
        k = self.K_CRITICAL - (self.mutation == "late")
        hit = d.temp_valid & (d.temp_mc >= p.t_crit) & ~ResetSignal()
        pipe = [Signal(name=f"crit_{i}", reset_less=True) for i in range(k)]
        m.d.sync += pipe[0].eq(hit)
        for a, b in zip(pipe, pipe[1:], strict=False):
            m.d.sync += b.eq(a & ~ResetSignal())
        m.d.comb += Assert(~pipe[-1] | (d.thermtrip & ~d.clk_en),
                           "critical reading trips within K cycles")
        past_trip = self._past(m, d.thermtrip)
        kept = self.cont if self.mutation != "no_reset" else self._past(m, Const(1))
        m.d.comb += [
            Assert(~(kept & past_trip) | d.thermtrip, "thermtrip latched until reset"),
            Assert(~d.thermtrip | ~d.clk_en, "thermtrip gates the clock"),
        ]

    # -- 2 -------------------------------------------------------------------------------
    def _voltage(self, m, d):
        p = self.params
        # The supply voltage: a reset does not change it. It starts at the lowest
        # point's voltage, what the controller assumes after reset.
        v_now = Signal(12, init=p.opps[0][1], reset_less=True)
        acked = d.v_req_valid & d.v_ack
        if self.mutation == "lying_ack":
            acked = acked & AnySeq(1)
        with m.If(acked):
            m.d.sync += v_now.eq(d.v_req_mv)
        m.d.comb += Assert(self._mv(d.f_index) <= v_now,
                           "frequency needs no more than the acknowledged voltage")
        lower = d.v_req_valid & (d.v_req_mv < v_now)
        m.d.comb += Assert(~lower | ((self._mv(d.f_index) <= d.v_req_mv)
                                     & (d.seq == SeqState.V_WAIT)),
                           "voltage lowered only after the frequency settled")
        if self.strengthen:
            r = self._reg
            seq, up = r("seq"), r("up_dir")
            raised = (seq == SeqState.V_SETTLE) | ((seq == SeqState.F_WAIT) & up)
            self._invariant(self._mv(r("index")) <= v_now, "applied point is powered")
            self._invariant(~raised | (self._mv(r("goal")) <= v_now),
                            "raised voltage acknowledged")

    # -- 3 -------------------------------------------------------------------------------
    def _pll(self, m, d):
        p = self.params
        clk_en = d.clk_en
        if self.mutation == "registered_clk_en":
            clk_en = self._past(m, d.clk_en)
        m.d.comb += Assert(~clk_en | d.pll_lock, "clk_en only while pll_lock")
        # Relock wait after a frequency change: until lock is lost and regained, or the
        # timeout (in ticks) has passed.
        prev_f = self._past(m, d.f_index)
        changed = self.cont & (d.f_index != prev_f)
        waiting = Signal()
        lost = Signal()
        ticks = Signal(range(p.pll_timeout + 2))
        with m.If(changed):
            # (A zero timeout ends the wait in the cycle of the change.)
            m.d.sync += [waiting.eq(p.pll_timeout != 0), lost.eq(~d.pll_lock),
                         ticks.eq(d.tick)]
        with m.Elif(waiting):
            with m.If(~d.pll_lock):
                m.d.sync += lost.eq(1)
            with m.If((lost & d.pll_lock) | (ticks >= p.pll_timeout)):
                m.d.sync += waiting.eq(0)
            with m.Elif(d.tick):
                m.d.sync += ticks.eq(ticks + 1)
        m.d.comb += Assert(~(waiting | changed) | ~clk_en,
                           "clock gated from a frequency change until relock")
        # A wait that ended by timeout without a relock is a fault: the interrupt
        # (pll_timeout is enabled at reset, and nothing clears it here) is up next cycle.
        timed_out = Signal()
        m.d.sync += timed_out.eq(waiting & ~(lost & d.pll_lock) & (ticks >= p.pll_timeout))
        if self.strengthen:
            r = self._reg
            in_wait = r("seq") == SeqState.F_WAIT
            self._invariant(~(self.cont & in_wait) | waiting | changed,
                            "harness waits while the sequencer does")
            self._invariant(~waiting | (in_wait & (ticks == r("stimer"))
                                        & (lost == r("seen"))),
                            "harness timer is the sequencer's")
        bit = regs.DVFS_EVENT_BITS["pll_timeout"]
        if p.irq_en >> bit & 1:
            m.d.comb += Assert(~timed_out | d.irq, "PLL lock timeout raises the interrupt")

    # -- 4 -------------------------------------------------------------------------------
    def _sequencer(self, m, d):
        p = self.params
        # The sequencer idles rate_limit ticks, then starts the transition in the next
        # cycle: one more tick when every cycle is a tick (the exact bound then).
        need = (p.rate_limit + (p.tick_cycles == 1)
                + (self.mutation == "rate_plus_one"))
        idle = d.seq == SeqState.IDLE
        prev_idle = self._past(m, idle)
        prev_index = self._past(m, d.index)
        prev_f = self._past(m, d.f_index)
        prev_vv = self._past(m, d.v_req_valid)
        # Ticks since the last transition ended (the applied index changed); starts
        # saturated so that the first transition after reset is free.
        since = Signal(range(need + 1), init=need)
        with m.If(self.cont & (d.index != prev_index)):
            m.d.sync += since.eq(d.tick)
        with m.Elif(d.tick & (since < need)):
            m.d.sync += since.eq(since + 1)
        start = self.cont & prev_idle & ~idle
        m.d.comb += Assert(~start | (since >= need),
                           "a transition starts rate_limit ticks after the last one")
        f_moves = Signal(2)
        v_reqs = Signal(2)
        with m.If(idle):
            m.d.sync += [f_moves.eq(0), v_reqs.eq(0)]
        with m.Else():
            with m.If(self.cont & (d.f_index != prev_f)):
                m.d.sync += f_moves.eq(f_moves + (f_moves < 3))
            with m.If(self.cont & d.v_req_valid & ~prev_vv):
                m.d.sync += v_reqs.eq(v_reqs + (v_reqs < 3))
        m.d.comb += [
            Assert(f_moves <= 1, "frequency changes at most once per transition"),
            Assert(v_reqs <= 1, "voltage requested at most once per transition"),
            Assert(~idle | ((d.index == d.f_index) & ~d.v_req_valid),
                   "idle sequencer: applied index is the frequency in effect"),
            Assert(~(self.cont & (d.index != prev_index)) | (prev_idle ^ idle),
                   "the applied index changes only when a transition ends"),
        ]
        if self.strengthen:
            r = self._reg
            rate, seq, up = r("rate"), r("seq"), r("up_dir")
            ended = self.cont & (d.index != prev_index)
            first_f = d.f_index != prev_f
            self._invariant(~ended | (rate == p.rate_limit), "rate timer loaded")
            self._invariant(~(idle & (rate > 0) & ~ended)
                            | (since + rate == p.rate_limit), "rate timer and harness")
            self._invariant(~(idle & (rate == 0) & ~ended) | (since >= p.rate_limit),
                            "rate timer expired")
            self._invariant(idle | (since >= p.rate_limit), "transition after the wait")
            by_state = {
                (SeqState.V_WAIT, 1): (f_moves == 0) & (v_reqs == prev_vv),
                (SeqState.V_SETTLE, 1): (f_moves == 0) & (v_reqs == 1),
                (SeqState.F_WAIT, 1): (v_reqs == 1) & (f_moves == ~first_f),
                (SeqState.F_WAIT, 0): (v_reqs == 0) & (f_moves == ~first_f),
                (SeqState.V_WAIT, 0): (f_moves == 1) & (v_reqs == prev_vv),
            }
            for (state, direction), cond in by_state.items():
                self._invariant(~((seq == state) & (up == direction)) | cond,
                                f"change counts in {state.name}")

    # -- 5 -------------------------------------------------------------------------------
    def _caps(self, m, d):
        p = self.params
        n1 = p.n_opps - 1
        # Read DVFS_CAPS every cycle: csr_rdata shows the previous cycle's caps.
        m.d.comb += [d.csr_we.eq(0), d.csr_re.eq(1), d.csr_addr.eq(_OFFSETS["DVFS_CAPS"])]
        step_cap, pc_cap = d.csr_rdata[4:8], d.csr_rdata[8:12]
        limited = self._past(m, d.prochot_o | d.sensor_fault | d.thermtrip)
        checked = d.index if self.mutation == "applied_index" else d.target
        m.d.comb += [
            Assert((d.index <= n1) & (d.target <= n1) & (d.f_index <= n1),
                   "indices inside the table"),
            Assert(~self.cont | ((checked <= step_cap) & (checked <= pc_cap)
                                 & (checked <= min(p.pmax, n1))),
                   "target at or below pmax, step cap and power cap"),
            Assert(~(self.cont & limited) | (checked == 0),
                   "hot, critical or sensor fault: lowest point"),
        ]
        if self.strengthen:
            past_step = self._past(m, self._reg("step_cap"))
            past_pc = self._past(m, self._reg("pc_cap"))
            self._invariant(~self.cont | ((step_cap == past_step) & (pc_cap == past_pc)),
                            "DVFS_CAPS shows the previous cycle's caps")

    def _rise(self, m, d):
        p = self.params
        n1 = p.n_opps - 1
        m.d.comb += [d.csr_we.eq(0), d.csr_re.eq(1), d.csr_addr.eq(_OFFSETS["DVFS_CAPS"])]
        step_cap, pc_cap = d.csr_rdata[4:8], d.csr_rdata[8:12]
        limited = self._past(m, d.prochot_o | d.sensor_fault | d.thermtrip)
        prev_f = self._past(m, d.f_index)
        rise = self.cont & (d.f_index > prev_f)
        top = d.f_index + (self.mutation == "strict")
        m.d.comb += Assert(~rise | ((top <= step_cap) & (top <= pc_cap)
                                    & (top <= min(p.pmax, n1)) & ~limited),
                           "frequency rises only within the caps")
        if self.strengthen:
            past_step = self._past(m, self._reg("step_cap"))
            past_pc = self._past(m, self._reg("pc_cap"))
            self._invariant(~self.cont | ((step_cap == past_step) & (pc_cap == past_pc)),
                            "DVFS_CAPS shows the previous cycle's caps")

    # -- 7 -------------------------------------------------------------------------------
    def _sensor(self, m, d):
        p = self.params
        bound = self.sensor_bound() - (self.mutation == "short_bound")
        # The regulator acknowledges every request within ACK_WITHIN cycles.
        wait = Signal(range(self.ACK_WITHIN + 2))
        with m.If(d.v_req_valid & ~d.v_ack):
            m.d.sync += wait.eq(wait + 1)
        with m.Else():
            m.d.sync += wait.eq(0)
        if self.mutation != "no_ack_bound":
            m.d.comb += Assume(~d.v_req_valid | d.v_ack | (wait < self.ACK_WITHIN))
        # Cycles since the sensor went bad (invalid or out of range; tick_cycles == 1),
        # saturating past the bound; a valid in-range reading or a reset clears it.
        oor = (d.temp_mc < p.sensor_min) | (d.temp_mc > p.sensor_max)
        bad_in = ~d.temp_valid | oor
        run = Signal(range(bound + 2))
        with m.If(~bad_in):
            m.d.sync += run.eq(0)
        with m.Elif(run <= bound):
            m.d.sync += run.eq(run + 1)
        done = run > bound
        ev = regs.DVFS_EVENT_BITS["sensor_fault"]
        irq = d.irq if p.irq_en >> ev & 1 else 1
        out_of_range = self._past(m, d.temp_valid & oor & ~ResetSignal())
        m.d.comb += [
            Assert(~done | ((d.f_index == 0) & (d.target == 0) & d.sensor_fault & irq),
                   "sensor fault: lowest frequency within the bound"),
            Assert(~done | (d.reason == Reason.SENSOR_FAULT) | (d.reason == Reason.CRITICAL),
                   "sensor fault reported as the reason"),
            Assert(~out_of_range | d.sensor_fault, "out-of-range reading is a fault at once"),
        ]
        if self.strengthen:
            r = self._reg
            inval, range_bad = r("inval"), r("range_bad")
            self._invariant(range_bad | (done & (inval > p.sensor_timeout))
                            | (~done & (inval == run)), "invalid-tick counter")
            # (An aborted upward transition withdraws its request: idle, wait not yet 0.)
            self._invariant((wait <= self.ACK_WITHIN)
                            & (~(wait > 0) | r("v_valid") | (r("seq") == SeqState.IDLE)),
                            "regulator wait")

    # -- 9 -------------------------------------------------------------------------------
    def _lock(self, m, d):
        names = sorted(n for n in LOCKED_REGISTERS if n in _OFFSETS
                       and n in self.params.csr_reset())
        if self.mutation == "unlocked_register":
            names.append("DVFS_PMIN")
        # One locked register, chosen by the solver, read in every cycle without a write.
        sel = Signal(6)
        m.d.comb += sel.eq(AnyConst(6))
        m.d.comb += Assume(_any_eq(sel, [_OFFSETS[n] for n in names]))
        we, waddr = AnySeq(1), AnySeq(6)
        m.d.comb += [d.csr_we.eq(we), d.csr_wdata.eq(AnySeq(32)),
                     d.csr_addr.eq(Mux(we, waddr, sel)), d.csr_re.eq(~we)]
        lock_w = we & (waddr == _OFFSETS["DVFS_LOCK"]) & d.csr_wdata[0]
        # Locked (seen from the port): a write of 1 to DVFS_LOCK, and no reset since.
        locked = Signal()
        m.d.sync += locked.eq(locked | lock_w)
        read = self._past(m, ~we)
        have = Signal()
        value = Signal(32)
        with m.If(locked & read):
            m.d.sync += have.eq(1)
            with m.If(~have):
                m.d.sync += value.eq(d.csr_rdata)
        # The read issued in the cycle after the lock write sees the locked value.
        m.d.comb += Assert(~(self.cont & locked & read & have) | (d.csr_rdata == value),
                           "locked register unchanged")
        if self.strengthen:
            current = Const(0, 32)
            for n in names:
                current = Mux(sel == _OFFSETS[n], self._reg(f"r_{n.lower()}"), current)
            self._invariant(locked == self._reg("locked"), "lock flag seen from the port")
            self._invariant(~(self.cont & read) | (d.csr_rdata == self._past(m, current)),
                            "read data is the selected register")
            self._invariant(~(locked & have) | (value == current), "kept value is current")
            self._invariant(~have | locked, "value kept only while locked")


def _registers(frag) -> dict:
    """Return the controller's registers by name (the names of :class:`DvfsState`)."""
    out = {}
    for stmt in frag.statements.get("sync", ()):
        # Amaranth has no public walk over a fragment's assignments.
        for sig in stmt._lhs_signals():
            out[sig.name] = sig
    return out


def _any_eq(sig, values):
    out = Const(0)
    for v in values:
        out = out | (sig == v)
    return out
