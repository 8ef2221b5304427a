"""The DVFS/thermal controller in hardware, with a simulation twin of its regulator and PLL.

:class:`DvfsController` implements, register for register, the machine that
:class:`llmchip.sw.dvfs.DvfsModel` describes (the model's docstring and ``docs/dvfs.md``
give the control laws, phases and fixed-point formats); tests compare the two cycle by
cycle. :class:`DvfsPlatformModel` is the RTL twin of :class:`llmchip.sw.dvfs.PlatformModel`
and :class:`DvfsSystem` joins both for trace replay (simulation only).
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from llmchip.config import check_int
from llmchip.sw import regs
from llmchip.sw.dvfs import (
    APPLY_PHASE,
    DIV_CYCLES,
    EVAL_PHASE,
    GAIN_FRAC,
    INTEG_BITS,
    LOCKED_REGISTERS,
    TEMP_BITS,
    TIMER_BITS,
    DvfsParams,
    Governor,
    Reason,
    SeqState,
    dvfs_registers,
)

from .pe import _rejected

__all__ = ["DvfsController", "DvfsPlatformModel", "DvfsSystem", "CSR_ADDR_BITS"]

#: Word-address bits of the controller's CSR port (offsets 0x200-0x2FC).
CSR_ADDR_BITS = 6

_TMAX = (1 << TIMER_BITS) - 1
_LIMITED = (Reason.POWER_CAP, Reason.THERMAL, Reason.HOT, Reason.SENSOR_FAULT, Reason.CRITICAL)


def _sat_inc(value, top: int):
    return Mux(value >= top, top, value + 1)


def _min(a, b):
    return Mux(a < b, a, b)


def _max(a, b):
    return Mux(a > b, a, b)


def _is_limited(reason):
    out = 0
    for r in _LIMITED:
        out = out | (reason == r)
    return out


class DvfsController(wiring.Component):
    """DVFS/thermal controller (see :mod:`llmchip.sw.dvfs` for the behaviour).

    Parameters
    ----------
    params : DvfsParams, optional
        Defaults to ``DvfsParams()``.

    Ports are named like the fields of :class:`llmchip.sw.dvfs.DvfsInputs` and
    :class:`llmchip.sw.dvfs.DvfsOutputs`. The CSR port takes ``csr_addr`` as a word offset
    from 0x200; a write with ``csr_we`` takes effect at the end of its cycle; a read with
    ``csr_re`` shows its value on ``csr_rdata`` in the next cycle (held until the next read).

    Raises
    ------
    TypeError
        If ``params`` is not a :class:`DvfsParams`.
    """

    def __init__(self, params: DvfsParams | None = None):
        params = DvfsParams() if params is None else params
        if not isinstance(params, DvfsParams):
            raise _rejected(self, TypeError(f"params must be a DvfsParams, not "
                                            f"{type(params).__name__}"))
        self.params = params
        iw = params.index_width
        super().__init__({
            "temp_mc": In(signed(TEMP_BITS)), "temp_valid": In(1),
            "busy": In(params.count_width), "total": In(params.count_width),
            "prochot_i": In(1), "pll_lock": In(1), "v_ack": In(1),
            "csr_addr": In(CSR_ADDR_BITS), "csr_wdata": In(32), "csr_we": In(1),
            "csr_re": In(1), "csr_rdata": Out(32),
            "index": Out(iw), "target": Out(iw), "v_req_mv": Out(12), "v_req_valid": Out(1),
            "f_index": Out(iw), "clk_en": Out(1), "duty": Out(5), "prochot_o": Out(1),
            "thermtrip": Out(1), "irq": Out(1), "reason": Out(3), "tick": Out(1), "sample": Out(1),
            "sensor_fault": Out(1), "modulating": Out(1), "seq": Out(2),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        n1 = p.n_opps - 1
        iw = p.index_width
        cw = p.count_width

        # -- registers behind the CSR port -------------------------------------------------
        resets = p.csr_reset()
        raw = {name: Signal(32, init=value, name=f"r_{name.lower()}")
               for name, value in resets.items() if name != "DVFS_LOCK"}
        ctrl = raw["DVFS_CTRL"]
        governor, pc_en, mod_duty = ctrl[0:2], ctrl[2], ctrl[4:8]
        irq_en = raw["DVFS_IRQ_EN"][0:6]
        pmin, pmax = raw["DVFS_PMIN"][0:4], raw["DVFS_PMAX"][0:4]
        up, down = raw["DVFS_GOV_TUNE"][0:7], raw["DVFS_GOV_TUNE"][8:15]
        sample_period = raw["DVFS_SAMPLE_PERIOD"][0:16]
        rate_limit = raw["DVFS_RATE_LIMIT"][0:16]

        def temp(name):
            return raw[name][0:TEMP_BITS].as_signed()

        t_passive, p_hyst = temp("DVFS_T_PASSIVE"), raw["DVFS_T_PASSIVE_HYST"][0:20]
        t_hot, h_hyst = temp("DVFS_T_HOT"), raw["DVFS_T_HOT_HYST"][0:20]
        t_crit = temp("DVFS_T_CRIT")
        hot_dwell = raw["DVFS_HOT_DWELL"][0:16]
        sensor_timeout = raw["DVFS_SENSOR_TIMEOUT"][0:16]
        smin, smax = temp("DVFS_SENSOR_MIN"), temp("DVFS_SENSOR_MAX")
        stuck_n = raw["DVFS_SENSOR_STUCK"][0:8]
        v_settle = raw["DVFS_V_SETTLE"][0:16]
        pll_timeout = raw["DVFS_PLL_TIMEOUT"][0:16]
        t_control = temp("DVFS_PC_T_CONTROL")
        p_sustain = raw["DVFS_PC_SUSTAIN"][0:16]
        kp_po, kp_pu = raw["DVFS_PC_KP_PO"][0:20], raw["DVFS_PC_KP_PU"][0:20]
        ki, kd = raw["DVFS_PC_KI"][0:20], raw["DVFS_PC_KD"][0:20]
        cutoff = raw["DVFS_PC_CUTOFF"][0:20]
        integ_max = raw["DVFS_PC_INTEG_MAX"][0:24]
        mhz_l = [raw[f"DVFS_OPP{i}"][0:12] for i in range(p.n_opps)]
        mv_l = [raw[f"DVFS_OPP{i}"][12:24] for i in range(p.n_opps)]
        mw_l = [raw[f"DVFS_OPP{i}_MW"][0:16] for i in range(p.n_opps)]
        mhz, mv = Array(mhz_l), Array(mv_l)

        # -- state ----------------------------------------------------------------------
        pre = Signal(range(max(2, p.tick_cycles)))
        scnt = Signal(TIMER_BITS)
        ph = Signal(range(APPLY_PHASE + 1))
        num = Signal(cw + 7)
        den = Signal(cw)
        quo = Signal(7)
        load = Signal(7)
        temp_r = Signal(signed(TEMP_BITS))
        range_bad = Signal()
        inval = Signal(TIMER_BITS)
        fault_r = Signal()
        t_prev = Signal(signed(TEMP_BITS))
        crossed = Signal()
        step_cap = Signal(iw, init=n1)
        stuck = Signal(8)
        gov = Signal(iw)
        integ = Signal(signed(INTEG_BITS))
        e_prev = Signal(signed(TEMP_BITS + 1))
        budget = Signal(16, init=p.opps[-1][2])
        pc_cap = Signal(iw, init=n1)
        hot = Signal()
        dwell = Signal(TIMER_BITS)
        tripped = Signal()
        target = Signal(iw)
        reason = Signal(3)
        seq = Signal(2)
        up_dir = Signal()
        goal = Signal(iw)
        index = Signal(iw)
        v_idx = Signal(iw)
        f_index = Signal(iw)
        v_valid = Signal()
        gate = Signal()
        stimer = Signal(TIMER_BITS)
        seen = Signal()
        rate = Signal(TIMER_BITS)
        acc = Signal(13)
        events = Signal(6)
        locked = Signal()
        thr_count = Signal(32)
        thr_time = Signal(32)
        transitions = Signal(32)
        bits = regs.DVFS_EVENT_BITS

        # -- combinational ----------------------------------------------------------------
        tick = Signal()
        m.d.comb += tick.eq(pre == p.tick_cycles - 1)
        fault = Signal()
        m.d.comb += fault.eq((inval > sensor_timeout) | range_bad
                             | ((stuck_n != 0) & (stuck >= stuck_n)))
        mod = Signal()
        m.d.comb += mod.eq(hot & (f_index == 0) & (seq == SeqState.IDLE))
        fmax = mhz_l[n1]
        inc_f = Signal(12)
        m.d.comb += inc_f.eq(mhz[f_index])
        inc_m = Signal(12)
        m.d.comb += inc_m.eq(Mux(mod, (inc_f * (mod_duty + 1)) >> 4, inc_f))
        inc = _min(inc_m, fmax)
        total = Signal(14)
        m.d.comb += total.eq(acc + inc)
        carry = Signal()
        m.d.comb += carry.eq(total >= fmax)
        m.d.sync += acc.eq(Mux(carry, total - fmax, total))
        m.d.sync += pre.eq(Mux(tick, 0, pre + 1))

        # -- sensor, critical ---------------------------------------------------------------
        with m.If(self.temp_valid):
            m.d.sync += [temp_r.eq(self.temp_mc),
                         range_bad.eq((self.temp_mc < smin) | (self.temp_mc > smax)),
                         inval.eq(0)]
        with m.Elif(tick):
            m.d.sync += inval.eq(_sat_inc(inval, _TMAX))
        m.d.sync += fault_r.eq(fault)
        tripped_n = Signal()
        m.d.comb += tripped_n.eq(tripped | (temp_r >= t_crit))
        m.d.sync += tripped.eq(tripped_n)

        # -- hot / PROCHOT -------------------------------------------------------------------
        hot_n = Signal()
        m.d.comb += hot_n.eq(hot)
        with m.If(~hot):
            m.d.comb += hot_n.eq((temp_r >= t_hot) | self.prochot_i)
            m.d.sync += dwell.eq(0)
        with m.Elif((temp_r < t_hot - h_hyst) & ~self.prochot_i):
            with m.If(dwell >= hot_dwell):
                m.d.comb += hot_n.eq(0)
                m.d.sync += dwell.eq(0)
            with m.Elif(tick):
                m.d.sync += dwell.eq(_sat_inc(dwell, _TMAX))
        with m.Else():
            m.d.sync += dwell.eq(0)
        m.d.sync += hot.eq(hot_n)

        # -- sample pipeline ---------------------------------------------------------------
        sample = Signal()
        m.d.comb += sample.eq(tick & (scnt + 1 >= sample_period))
        # The cycle in which busy/total are taken (the accelerator restarts its windows).
        m.d.comb += self.sample.eq(sample)
        with m.If(tick):
            m.d.sync += scnt.eq(Mux(scnt + 1 >= sample_period, 0, scnt + 1))
        busy_c = Mux(self.busy > self.total, self.total, self.busy)
        with m.Switch(ph):
            with m.Case(0):
                with m.If(sample):
                    m.d.sync += [ph.eq(1), num.eq(busy_c * 100), den.eq(self.total),
                                 quo.eq(0)]
            for k in range(1, DIV_CYCLES + 1):
                with m.Case(k):
                    b = DIV_CYCLES - k
                    shifted = den << b
                    take = num >= shifted
                    quo_n = Mux(take, quo | (1 << b), quo)
                    m.d.sync += [ph.eq(k + 1), quo.eq(quo_n)]
                    with m.If(take):
                        m.d.sync += num.eq(num - shifted)
                    if k == DIV_CYCLES:
                        m.d.sync += load.eq(Mux(den == 0, 0, quo_n))
            with m.Case(EVAL_PHASE):
                m.d.sync += ph.eq(APPLY_PHASE)
                self._eval(m, locals())
            with m.Default():
                m.d.sync += ph.eq(0)

        # -- arbitration ------------------------------------------------------------------
        pmin_e = _min(pmin, n1)
        pmax_e = _min(pmax, n1)
        floor = Signal(iw)
        want = Signal(iw)
        m.d.comb += [floor.eq(_max(gov, pmin_e)), want.eq(_min(floor, pmax_e))]
        arb = Signal(iw)
        m.d.comb += arb.eq(Mux(tripped | fault | hot, 0, _min(_min(want, step_cap), pc_cap)))
        reason_c = Signal(3)
        chain = Mux(arb < n1, Reason.IDLE, Reason.NONE)
        chain = Mux(pmax_e < floor, Reason.HOST, chain)
        chain = Mux(pc_cap < want, Reason.POWER_CAP, chain)
        chain = Mux(step_cap < want, Reason.THERMAL, chain)
        chain = Mux(hot, Reason.HOT, chain)
        chain = Mux(fault, Reason.SENSOR_FAULT, chain)
        chain = Mux(tripped, Reason.CRITICAL, chain)
        m.d.comb += reason_c.eq(chain)
        # The target at the end of this cycle (the sequencer's upward transitions follow it).
        target_n = Signal(iw)
        m.d.comb += target_n.eq(Mux((arb < target) | ((arb > target) & (ph == APPLY_PHASE)),
                                    arb, target))
        m.d.sync += target.eq(target_n)
        m.d.sync += reason.eq(reason_c)
        lim_c, lim_r = _is_limited(reason_c), _is_limited(reason)
        ev = Signal(6)
        ev_done = Signal()
        ev_pll = Signal()
        m.d.comb += [
            ev[bits["throttle"]].eq(lim_c & ~lim_r),
            ev[bits["hot"]].eq(hot_n & ~hot),
            ev[bits["critical"]].eq(tripped_n & ~tripped),
            ev[bits["sensor_fault"]].eq(fault & ~fault_r),
            ev[bits["pll_timeout"]].eq(ev_pll),
            ev[bits["transition"]].eq(ev_done),
        ]
        with m.If(lim_c & ~lim_r):
            m.d.sync += thr_count.eq(thr_count + 1)
        with m.If(lim_c & tick):
            m.d.sync += thr_time.eq(thr_time + 1)

        # -- transition sequencer ------------------------------------------------------------
        def finish():
            m.d.sync += [seq.eq(SeqState.IDLE), index.eq(goal), rate.eq(rate_limit),
                         transitions.eq(transitions + 1)]
            m.d.comb += ev_done.eq(1)

        with m.Switch(seq):
            with m.Case(SeqState.IDLE):
                with m.If((target != index) & (rate == 0)):
                    m.d.sync += [goal.eq(target), up_dir.eq(target > index), stimer.eq(0),
                                 seen.eq(0)]
                    with m.If(target > index):
                        m.d.sync += [v_idx.eq(target), v_valid.eq(1), seq.eq(SeqState.V_WAIT)]
                    with m.Else():
                        m.d.sync += [f_index.eq(target), gate.eq(1), seq.eq(SeqState.F_WAIT)]
                with m.Elif(tick & (rate > 0)):
                    m.d.sync += rate.eq(rate - 1)
            with m.Case(SeqState.V_WAIT):
                with m.If(up_dir & (target_n <= f_index)):
                    # Abort (see the model): withdraw the request; an acknowledge in this
                    # cycle leaves the voltage raised.
                    m.d.sync += [seq.eq(SeqState.IDLE), v_valid.eq(0)]
                    with m.If(~self.v_ack):
                        m.d.sync += v_idx.eq(index)
                with m.Elif(self.v_ack):
                    m.d.sync += [v_valid.eq(0), stimer.eq(0)]
                    with m.If(up_dir):
                        m.d.sync += seq.eq(SeqState.V_SETTLE)
                    with m.Else():
                        finish()
            with m.Case(SeqState.V_SETTLE):
                rise_to = _min(goal, target_n)
                with m.If(target_n <= f_index):
                    m.d.sync += seq.eq(SeqState.IDLE)  # abort; the raised voltage stays
                with m.Elif(stimer >= v_settle):
                    m.d.sync += [f_index.eq(rise_to), goal.eq(rise_to), gate.eq(1),
                                 seq.eq(SeqState.F_WAIT), stimer.eq(0), seen.eq(0)]
                with m.Elif(tick):
                    m.d.sync += stimer.eq(_sat_inc(stimer, _TMAX))
            with m.Case(SeqState.F_WAIT):
                with m.If(~self.pll_lock):
                    m.d.sync += seen.eq(1)
                locked_now = seen & self.pll_lock
                timeout = stimer >= pll_timeout
                with m.If(locked_now | timeout):
                    m.d.sync += gate.eq(0)
                    m.d.comb += ev_pll.eq(~locked_now)
                    with m.If(up_dir):
                        finish()
                    with m.Else():
                        m.d.sync += [v_idx.eq(goal), v_valid.eq(1), seq.eq(SeqState.V_WAIT)]
                with m.Elif(tick):
                    m.d.sync += stimer.eq(_sat_inc(stimer, _TMAX))

        # -- CSR port -------------------------------------------------------------------
        offsets = {r.name: (r.offset - regs.DVFS_BASE) >> 2 for r in dvfs_registers()}
        we = self.csr_we
        addr = self.csr_addr
        for name, reg in raw.items():
            mask = 0
            for f in regs.by_name(name).fields:
                mask |= ((1 << f.width) - 1) << f.lsb
            hit = we & (addr == offsets[name])
            if name in LOCKED_REGISTERS:
                hit = hit & ~locked
            with m.If(hit):
                m.d.sync += reg.eq(self.csr_wdata & mask)
        with m.If(we & (addr == offsets["DVFS_LOCK"])):
            m.d.sync += locked.eq(locked | self.csr_wdata[0])
        clear = Mux(we & (addr == offsets["DVFS_EVENTS"]), self.csr_wdata[0:6], 0)
        m.d.sync += events.eq((events & ~clear) | ev)

        status = Signal(32)
        m.d.comb += status.eq(index | (target << 4) | (f_index << 8) | (v_idx << 12)
                              | (reason << 16) | (hot << 20) | (tripped << 21) | (fault << 22)
                              | (mod << 23) | (seq << 24))
        values = {
            "DVFS_LOCK": locked,
            "DVFS_STATUS": status,
            "DVFS_EVENTS": events,
            "DVFS_TEMP": temp_r.as_unsigned(),
            "DVFS_LOAD": load,
            "DVFS_CAPS": gov | (step_cap << 4) | (pc_cap << 8) | (budget << 16),
            "DVFS_INTEG": integ.as_unsigned(),
            "DVFS_THROTTLE_COUNT": thr_count,
            "DVFS_THROTTLE_TIME": thr_time,
            "DVFS_TRANSITIONS": transitions,
        }
        values.update(raw)
        with m.If(self.csr_re):
            with m.Switch(addr):
                for name, value in values.items():
                    with m.Case(offsets[name]):
                        m.d.sync += self.csr_rdata.eq(value)
                with m.Default():
                    m.d.sync += self.csr_rdata.eq(0)

        # -- outputs ----------------------------------------------------------------------
        m.d.comb += [
            self.index.eq(index), self.target.eq(target), self.v_req_mv.eq(mv[v_idx]),
            self.v_req_valid.eq(v_valid), self.f_index.eq(f_index),
            self.clk_en.eq(carry & ~gate & ~tripped & self.pll_lock),
            self.duty.eq(Mux(mod, mod_duty + 1, 16)), self.prochot_o.eq(hot),
            self.thermtrip.eq(tripped), self.irq.eq((events & irq_en).any()),
            self.reason.eq(reason), self.tick.eq(tick), self.sensor_fault.eq(fault),
            self.modulating.eq(mod), self.seq.eq(seq),
        ]
        return m

    @staticmethod
    def _eval(m: Module, v: dict) -> None:
        """Governor, step-wise cap, stuck check and PID power cap (the eval phase)."""
        n1, load, t = v["n1"], v["load"], v["temp_r"]
        mhz_l, mw_l, gov = v["mhz_l"], v["mw_l"], v["gov"]
        # Governor.
        lowest_od = n1
        lowest_su = n1
        need_od = mhz_l[0] * 100 + load * (mhz_l[n1] - mhz_l[0])
        need_su = mhz_l[n1] * load * 5
        for k in range(n1, -1, -1):
            lowest_od = Mux(mhz_l[k] * 100 >= need_od, k, lowest_od)
            lowest_su = Mux(mhz_l[k] * 400 >= need_su, k, lowest_su)
        with m.Switch(v["governor"]):
            with m.Case(Governor.PERFORMANCE):
                m.d.sync += gov.eq(n1)
            with m.Case(Governor.CONSERVATIVE):
                with m.If(load > v["up"]):
                    m.d.sync += gov.eq(Mux(gov >= n1, n1, gov + 1))
                with m.Elif(load < v["down"]):
                    m.d.sync += gov.eq(Mux(gov == 0, 0, gov - 1))
            with m.Case(Governor.ONDEMAND):
                m.d.sync += gov.eq(Mux(load > v["up"], n1, lowest_od))
            with m.Case(Governor.SCHEDUTIL):
                m.d.sync += gov.eq(lowest_su)
        # Step-wise passive cap.
        step_cap, t_prev, crossed = v["step_cap"], v["t_prev"], v["crossed"]
        threshold = Mux(crossed, v["t_passive"] - v["p_hyst"], v["t_passive"])
        above = t >= threshold
        rising = t > t_prev
        with m.If(above & rising):
            m.d.sync += step_cap.eq(Mux(step_cap == 0, 0, step_cap - 1))
        with m.Elif(~above & ~rising):
            m.d.sync += step_cap.eq(Mux(step_cap >= n1, n1, step_cap + 1))
        stuck = v["stuck"]
        m.d.sync += [crossed.eq(above), t_prev.eq(t),
                     stuck.eq(Mux(t == t_prev, _sat_inc(stuck, 255), 0))]
        # PID power cap.
        e = Signal(signed(TEMP_BITS + 1))
        m.d.comb += e.eq(v["t_control"] - t)
        integ, budget, pc_cap, e_prev = v["integ"], v["budget"], v["pc_cap"], v["e_prev"]
        with m.If(v["pc_en"]):
            kp = Mux(e < 0, v["kp_po"], v["kp_pu"])
            imax, cutoff = v["integ_max"], v["cutoff"]
            ssum = integ + e
            clamped = Mux(ssum > imax, imax, Mux(ssum < -imax, -imax, ssum))
            integ_n = Signal(signed(INTEG_BITS))
            m.d.comb += integ_n.eq(Mux((e >= -cutoff) & (e <= cutoff), clamped, integ))
            power = (v["p_sustain"] + ((kp * e) >> GAIN_FRAC)
                     + ((v["ki"] * integ_n) >> GAIN_FRAC)
                     + ((v["kd"] * (e - e_prev)) >> GAIN_FRAC))
            budget_n = Signal(16)
            m.d.comb += budget_n.eq(Mux(power < 0, 0, Mux(power > mw_l[n1], mw_l[n1], power)))
            cap = 0
            for k in range(n1 + 1):
                cap = Mux(mw_l[k] * load <= budget_n * 100, k, cap)
            m.d.sync += [integ.eq(integ_n), budget.eq(budget_n), pc_cap.eq(cap)]
        with m.Else():
            m.d.sync += [integ.eq(0), budget.eq(mw_l[n1]), pc_cap.eq(n1)]
        m.d.sync += e_prev.eq(e)


class DvfsPlatformModel(wiring.Component):
    """RTL twin of :class:`llmchip.sw.dvfs.PlatformModel` (an ideal regulator and PLL; for
    simulation only).

    Parameters
    ----------
    params : DvfsParams, optional
    v_delay, lock_delay : int
        Regulator acknowledge and PLL relock times in ticks, 0 to 65535.

    Raises
    ------
    TypeError, ValueError
        If a delay is out of range.
    """

    def __init__(self, params: DvfsParams | None = None, v_delay: int = 5,
                 lock_delay: int = 5):
        params = DvfsParams() if params is None else params
        try:
            check_int("v_delay", v_delay, 0, _TMAX)
            check_int("lock_delay", lock_delay, 0, _TMAX)
        except (TypeError, ValueError) as exc:
            raise _rejected(self, exc) from None
        self.params, self.v_delay, self.lock_delay = params, v_delay, lock_delay
        iw = params.index_width
        super().__init__({"tick": In(1), "v_req_mv": In(12), "v_req_valid": In(1),
                          "f_index": In(iw), "v_ack": Out(1), "pll_lock": Out(1, init=1),
                          "mv": Out(12, init=params.opps[0][1])})

    def elaborate(self, platform):
        m = Module()
        v_cnt = Signal(TIMER_BITS)
        l_cnt = Signal(TIMER_BITS)
        f_prev = Signal.like(self.f_index)
        with m.If(self.v_req_valid):
            with m.If(~self.v_ack):
                with m.If(v_cnt >= self.v_delay):
                    m.d.sync += [self.v_ack.eq(1), self.mv.eq(self.v_req_mv)]
                with m.Elif(self.tick):
                    m.d.sync += v_cnt.eq(_sat_inc(v_cnt, _TMAX))
        with m.Else():
            m.d.sync += [v_cnt.eq(0), self.v_ack.eq(0)]
        with m.If(self.f_index != f_prev):
            m.d.sync += [self.pll_lock.eq(0), l_cnt.eq(0), f_prev.eq(self.f_index)]
        with m.Elif(~self.pll_lock):
            with m.If(l_cnt >= self.lock_delay):
                m.d.sync += self.pll_lock.eq(1)
            with m.Elif(self.tick):
                m.d.sync += l_cnt.eq(_sat_inc(l_cnt, _TMAX))
        return m


class DvfsSystem(wiring.Component):
    """Controller plus platform twin, with a count of enabled clock cycles (simulation only).

    The top level that trace replay simulates: trace inputs and the CSR port go in; the
    controller's outputs, the platform's ``pll_lock``/``v_ack``/``mv`` and ``en_count``
    (cycles with ``clk_en`` high since reset) come out.
    """

    def __init__(self, params: DvfsParams | None = None, v_delay: int = 5,
                 lock_delay: int = 5):
        self.ctrl = DvfsController(params)
        self.plat = DvfsPlatformModel(self.ctrl.params, v_delay, lock_delay)
        p = self.ctrl.params
        iw = p.index_width
        super().__init__({
            "temp_mc": In(signed(TEMP_BITS)), "temp_valid": In(1),
            "busy": In(p.count_width), "total": In(p.count_width), "prochot_i": In(1),
            "csr_addr": In(CSR_ADDR_BITS), "csr_wdata": In(32), "csr_we": In(1),
            "csr_re": In(1), "csr_rdata": Out(32),
            "index": Out(iw), "target": Out(iw), "v_req_mv": Out(12), "f_index": Out(iw),
            "clk_en": Out(1), "reason": Out(3), "thermtrip": Out(1), "irq": Out(1),
            "pll_lock": Out(1), "v_ack": Out(1), "mv": Out(12), "en_count": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.ctrl = c = self.ctrl
        m.submodules.plat = pl = self.plat
        m.d.comb += [
            c.temp_mc.eq(self.temp_mc), c.temp_valid.eq(self.temp_valid),
            c.busy.eq(self.busy), c.total.eq(self.total), c.prochot_i.eq(self.prochot_i),
            c.csr_addr.eq(self.csr_addr), c.csr_wdata.eq(self.csr_wdata),
            c.csr_we.eq(self.csr_we), c.csr_re.eq(self.csr_re),
            self.csr_rdata.eq(c.csr_rdata),
            c.pll_lock.eq(pl.pll_lock), c.v_ack.eq(pl.v_ack),
            pl.tick.eq(c.tick), pl.v_req_mv.eq(c.v_req_mv), pl.v_req_valid.eq(c.v_req_valid),
            pl.f_index.eq(c.f_index),
            self.index.eq(c.index), self.target.eq(c.target), self.v_req_mv.eq(c.v_req_mv),
            self.f_index.eq(c.f_index), self.clk_en.eq(c.clk_en), self.reason.eq(c.reason),
            self.thermtrip.eq(c.thermtrip), self.irq.eq(c.irq), self.pll_lock.eq(pl.pll_lock),
            self.v_ack.eq(pl.v_ack), self.mv.eq(pl.mv),
        ]
        with m.If(c.clk_en):
            m.d.sync += self.en_count.eq(self.en_count + 1)
        return m
