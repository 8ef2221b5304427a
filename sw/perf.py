"""Performance model: cycles, array use and DRAM traffic of a program, without running it.

:func:`simulate` is a discrete-event model of the accelerator running a program: the
command processor's fetch (bursts of up to eight instructions through the shared DMA read
engine) and in-order dispatch into four-deep queues; the pipelined load unit; the execute
unit's weight feeder (``rows`` cycles per weight tile, one tile in the shadow registers)
and activation stream (one row per cycle); the store unit (one STORE at a time, rows
through the post-processor into the DMA write engine); the two DMA engines (commands in
order, one beat per cycle, a fixed round trip); and the four dependency-token counters.
The constants in :class:`Timing` are the RTL's pipeline depths, measured on the generated
Verilog (``scripts/bench_perf.py`` shows model vs RTL). :func:`roofline` gives the ideal
cycles of a GEMM, ``max(MACs / (rows * cols), compulsory DRAM bytes / bus bytes)``.

The equations are in ``docs/compiler.md``.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import asdict, dataclass

from llmchip.config import AcceleratorConfig

from . import isa

__all__ = ["Timing", "PerfResult", "simulate", "roofline", "compulsory_bytes",
           "estimate_schedule", "predict_gemm"]


@dataclass(frozen=True)
class Timing:
    """Pipeline constants of the RTL and the memory (cycles).

    ``dram_read_latency``/``dram_write_latency`` belong to the memory system (the
    simulation DRAM's defaults); the others are the accelerator's own.
    """

    dram_read_latency: int = 8     #: AR accepted -> first R beat
    dram_write_latency: int = 2    #: last W beat -> B response
    rd_first: int = 14             #: read command accepted -> first AR (check, issue)
    rd_done: int = 0               #: last R beat -> completion seen by the client
    rd_gap: int = 1                #: idle address-channel cycles between commands
    wr_first: int = 7              #: write command accepted -> first W beat possible
    wr_done: int = 18              #: B response -> completion seen by the store unit
    load_issue: int = 7            #: LOAD taken -> DMA command accepted
    load_inflight: int = 8         #: LOADs in flight in the load unit
    fetch_issue: int = 1           #: fetch decided -> DMA command presented
    fetch_gap: int = 3             #: fetch completion -> next fetch may be decided
    dispatch: int = 5              #: instruction in the buffer -> in its queue
    ld_terms: int = 2              #: extra cycles an instruction takes into its queue:
    ex_terms: int = 6              #: its operand check's pipeline (load, execute, store)
    st_terms: int = 2
    take: int = 1                  #: instruction at a queue head -> taken by its unit
    w_first: int = 6               #: weight tile start -> first weight row in the array
    a_first: int = 4               #: MATMUL taken -> first activation row can enter
    commit: int = 4                #: last row out of the array -> readable, token pushed
    st_first: int = 5              #: STORE taken -> first row into the write engine
    queue_depth: int = 4
    slice_depth: int = 2           #: instructions the register slice between a queue and
    #:                                its unit holds (a skid buffer) beyond the queue
    fetch_max: int = 8


@dataclass
class PerfResult:
    """What :func:`simulate` predicts for one program."""

    cycles: int                  #: doorbell to END (PERF_BUSY)
    array_busy: int              #: cycles a row entered the array (PERF_ARRAY_BUSY)
    macs: int                    #: PERF_MACS (rows x cols per busy cycle)
    dram_read_bytes: int         #: PERF_DMA_RD_BYTES (instruction fetch included)
    dram_write_bytes: int        #: PERF_DMA_WR_BYTES
    instructions: int
    sram_reads: int = 0          #: scratchpad rows read by the array feeders
    acc_accesses: int = 0        #: accumulator rows written or read

    def to_dict(self) -> dict:
        return asdict(self)


def compulsory_bytes(config: AcceleratorConfig, m: int, k: int, n: int) -> int:
    """DRAM bytes a GEMM cannot avoid: X, W and the parameters read once, Y written once."""
    nb = -(-n // config.cols)
    return m * k + k * n + nb * 9 * config.cols + m * n


def roofline(config: AcceleratorConfig, m: int, k: int, n: int) -> dict:
    """Return the ideal cycles of an ``m x k x n`` GEMM and which bound sets them.

    The memory bound takes the AXI4 read and write channels as separate: each moves one
    beat per cycle, so it is the larger of the compulsory reads (X, W, parameters) and
    writes (Y), each over the bus width.
    """
    compute = -(-m * k * n // config.pes)
    writes = m * n
    reads = compulsory_bytes(config, m, k, n) - writes
    memory = max(-(-reads // config.bus_bytes), -(-writes // config.bus_bytes))
    return {"ideal_cycles": max(compute, memory), "compute_cycles": compute,
            "memory_cycles": memory, "bound": "compute" if compute >= memory else "memory"}


def _beats(row_bytes: int, addr: int, B: int) -> int:
    return ((addr % B) + row_bytes + B - 1) // B


class _ReadEngine:
    """The DMA read engine: commands in acceptance order, one data beat per cycle."""

    def __init__(self, t: Timing):
        self.t = t
        self.data_free = 0       # first cycle the data channel is free
        self.addr_free = 0
        self.bytes = 0

    def command(self, accept: int, beats: int, nbytes: int) -> tuple[int, int]:
        """Return (first beat, completion) of a command accepted at ``accept``."""
        t = self.t
        first_addr = max(accept + t.rd_first, self.addr_free)
        first = max(first_addr + t.dram_read_latency, self.data_free)
        last = first + beats - 1
        self.data_free = last + 1
        self.addr_free = first_addr + beats + t.rd_gap
        self.bytes += nbytes
        return first, last + t.rd_done


def simulate(program, config: AcceleratorConfig | None = None,
             timing: Timing | None = None, trace: list | None = None) -> PerfResult:
    """Predict the performance counters of running ``program``.

    Parameters
    ----------
    program : Program or list of int
        A compiled :class:`llmchip.sw.compile.Program`, or encoded instruction words
        (then ``config`` is required).
    config : AcceleratorConfig, optional
    timing : Timing, optional
        Pipeline and memory constants (default :class:`Timing`).
    trace : list, optional
        Receives ``(cycle, instruction index, "take")`` for every instruction a unit takes.

    Raises
    ------
    ValueError
        If the program is empty, lacks END, or its tokens can never be satisfied.
    """
    if config is None:
        config = program.config
    words = program.insns if hasattr(program, "insns") else list(program)
    t = timing or Timing()
    insns = [isa.decode(w) for w in words]
    if not insns or insns[-1].op != isa.Opcode.END:
        raise ValueError("a program must end with END")
    sim = _Sim(config, t, insns)
    if trace is not None:
        sim.trace = trace
    return sim.run()


class _Sim:
    def __init__(self, cfg: AcceleratorConfig, t: Timing, insns):
        self.cfg, self.t, self.insns = cfg, t, insns
        self.B = cfg.bus_bytes
        self.rd = _ReadEngine(t)
        self.wr_free = 0
        self.wr_bytes = 0
        self.events: list = []
        self.seq = 0
        # tokens: ld->ex, ex->ld, ex->st, st->ex
        self.tok = {"le": 0, "el": 0, "es": 0, "se": 0}
        self.queues = [deque(), deque(), deque()]   # (index, ready time)
        self.ibuf: deque = deque()                   # (index, ready time)
        self.fetch_head = 0
        self.fetch_busy = False
        self.fetch_pending = 0
        self.ld_inflight = 0
        self.ex_busy_until = 0       # array results committed (for FENCE/END)
        self.ex_take_ok = 0          # next MATMUL may be taken
        self.ex_shadow_free = 0      # shadow weight registers free
        self.ex_stream_end = 0       # activation port free
        self.ex_w_free = 0           # weight feeder free
        self.ex_pending = 0          # MATMULs taken, not complete
        self.st_free = 0
        self.st_busy = False
        self.array_busy = 0
        self.sram_reads = 0
        self.acc_accesses = 0
        self.done_at = None
        self.dispatch_ok = 0
        self.drained_since = None    # first cycle of the current drained stretch
        self.trace: list | None = None

    def _log(self, now: int, index: int, what: str) -> None:
        if self.trace is not None:
            self.trace.append((now, index, what))

    def _at(self, when: int, fn, *args) -> None:
        heapq.heappush(self.events, (when, self.seq, fn, args))
        self.seq += 1

    # -- fetch and dispatch ------------------------------------------------------------

    def _try_fetch(self, now: int) -> bool:
        n = len(self.insns)
        if self.fetch_busy or self.fetch_head >= n:
            return False
        room = self.t.fetch_max - len(self.ibuf) - self.fetch_pending
        count = min(room, n - self.fetch_head)
        if count <= 0:
            return False
        accept = now + self.t.fetch_issue
        beats = count * max(1, isa.INSN_BYTES // self.B)
        first, done = self.rd.command(accept, beats, count * isa.INSN_BYTES)
        per = max(1, isa.INSN_BYTES // self.B)
        for j in range(count):
            self._at(first + (j + 1) * per, self._fetched, self.fetch_head + j)
        self.fetch_head += count
        self.fetch_busy = True
        self.fetch_pending = count
        self._at(done, self._fetch_done)
        return True

    def _fetched(self, now: int, index: int) -> None:
        self.fetch_pending -= 1
        self.ibuf.append((index, now))

    def _fetch_done(self, now: int) -> None:
        self._at(now + self.t.fetch_gap, self._fetch_free)

    def _fetch_free(self, now: int) -> None:
        self.fetch_busy = False

    def _drained(self) -> bool:
        return (not any(self.queues) and self.ld_inflight == 0 and self.ex_pending == 0
                and not self.st_busy)

    def _try_dispatch(self, now: int) -> bool:
        if not self.ibuf or now < self.dispatch_ok:
            return False
        index, ready = self.ibuf[0]
        if ready > now:
            return False
        insn = self.insns[index]
        q = isa.QUEUE[insn.op]
        if q == isa.Queue.CONTROL:
            # The hardware's `drained` is a register: FENCE/END go a cycle after the
            # units were seen drained.
            if self.drained_since is None or now < self.drained_since + 1:
                return False
            self.ibuf.popleft()
            self.dispatch_ok = now + 1
            if insn.op == isa.Opcode.END:
                self.done_at = now
            return True
        if len(self.queues[q]) >= self.t.queue_depth + self.t.slice_depth:
            return False
        self.ibuf.popleft()
        extra = {isa.Queue.LOAD: self.t.ld_terms, isa.Queue.EXECUTE: self.t.ex_terms,
                 isa.Queue.STORE: self.t.st_terms}[q]
        self.queues[q].append((index, now + self.t.dispatch + extra))
        self.dispatch_ok = now + 1
        return True

    # -- units -----------------------------------------------------------------------

    def _head(self, q: int, now: int):
        if not self.queues[q]:
            return None
        index, ready = self.queues[q][0]
        if ready + self.t.take - 1 > now:
            return None
        return index, self.insns[index]

    def _try_load(self, now: int) -> bool:
        h = self._head(0, now)
        if h is None or self.ld_inflight >= self.t.load_inflight:
            return False
        index, insn = h
        if insn.pop_next and self.tok["el"] == 0:
            return False
        self.queues[0].popleft()
        self._log(now, index, "take")
        if insn.pop_next:
            self.tok["el"] -= 1
        f = insn.fields          # only LOAD goes to the load queue
        rows, row_bytes = f["rows"], f["row_bytes"]
        stride, addr = f["dram_stride"], f["dram_addr"]
        if stride % self.B == 0 or rows == 1:
            beats = rows * _beats(row_bytes, addr, self.B)
        else:
            beats = sum(_beats(row_bytes, addr + r * stride, self.B) for r in range(rows))
        _, done = self.rd.command(now + self.t.load_issue, beats, rows * row_bytes)
        self.ld_inflight += 1
        self._at(done, self._load_done, insn)
        return True

    def _load_done(self, now: int, insn) -> None:
        self.ld_inflight -= 1
        if insn.push_next:
            self.tok["le"] += 1

    def _try_exec(self, now: int) -> bool:
        h = self._head(1, now)
        if h is None or now < self.ex_take_ok:
            return False
        index, insn = h
        if (insn.pop_prev and self.tok["le"] == 0) or (insn.pop_next and self.tok["se"] == 0):
            return False
        self.queues[1].popleft()
        self._log(now, index, "take")
        if insn.pop_prev:
            self.tok["le"] -= 1
        if insn.pop_next:
            self.tok["se"] -= 1
        t, R = self.t, self.cfg.rows
        f = insn.fields
        if insn.op == isa.Opcode.LOAD_W:
            start = max(now, self.ex_w_free, self.ex_shadow_free)
            self.ex_w_free = start + R
            self.ex_shadow_free = start + R
            self.sram_reads += R
            self.ex_take_ok = now + 1
            return True
        rows = f["rows"]
        steps = f["k_steps"]
        a_ready = now + t.a_first
        switch = None
        w_start = 0
        for s in range(max(steps, 1)):
            if steps:
                # The feeder prefetches rows into its FIFO, so only a tile that follows an
                # idle feeder pays the scratchpad read latency.
                feeder = max(now + 1 + t.w_first, self.ex_w_free) if s == 0 else self.ex_w_free
                w_start = max(feeder, self.ex_shadow_free)
                self.ex_w_free = w_start + R
                self.sram_reads += R
                switch = max(w_start + R, self.ex_stream_end, a_ready)
                self.ex_shadow_free = switch
            else:
                switch = max(self.ex_stream_end, a_ready, self.ex_shadow_free)
            self.ex_stream_end = switch + rows
            a_ready = 0
        self.array_busy += rows * max(steps, 1)
        self.sram_reads += rows * max(steps, 1)
        self.acc_accesses += rows * max(steps, 1)
        done = self.ex_stream_end + self.cfg.latency + t.commit   # rows + cols + pipeline
        self.ex_take_ok = max(now + 1, w_start if steps else switch)
        self.ex_pending += 1
        self.ex_busy_until = max(self.ex_busy_until, done)
        self._at(done, self._exec_done, insn)
        return True

    def _exec_done(self, now: int, insn) -> None:
        self.ex_pending -= 1
        if insn.push_prev:
            self.tok["el"] += 1
        if insn.push_next:
            self.tok["es"] += 1

    def _try_store(self, now: int) -> bool:
        h = self._head(2, now)
        if h is None or self.st_busy or now < self.st_free:
            return False
        index, insn = h
        if insn.op == isa.Opcode.CONFIG:
            self.queues[2].popleft()
            self.st_free = now + 1
            return True
        if insn.pop_prev and self.tok["es"] == 0:
            return False
        self.queues[2].popleft()
        self._log(now, index, "take")
        if insn.pop_prev:
            self.tok["es"] -= 1
        t, f = self.t, insn.fields
        rows, cols = f["rows"], f["cols"]
        beats = rows * _beats(cols, f["dram_addr"], self.B) if f["dram_stride"] % self.B == 0 \
            else sum(_beats(cols, f["dram_addr"] + r * f["dram_stride"], self.B)
                     for r in range(rows))
        first = max(now + t.st_first, self.wr_free)
        last = first + max(beats, rows) - 1
        self.wr_free = last + 1
        self.wr_bytes += rows * cols
        self.acc_accesses += rows
        done = last + t.dram_write_latency + t.wr_done
        self.st_busy = True
        self._at(done, self._store_done, insn)
        return True

    def _store_done(self, now: int, insn) -> None:
        self.st_busy = False
        self.st_free = now + 1
        if insn.push_prev:
            self.tok["se"] += 1

    # -- main loop -------------------------------------------------------------------

    def run(self) -> PerfResult:
        now = 0
        idle_jumps = 0
        while self.done_at is None:
            while self.events and self.events[0][0] <= now:
                when, _, fn, args = heapq.heappop(self.events)
                fn(when, *args)
            if not self._drained():
                self.drained_since = None
            elif self.drained_since is None:
                self.drained_since = now
            acted = False
            acted |= self._try_fetch(now)
            acted |= self._try_dispatch(now)
            acted |= self._try_load(now)
            acted |= self._try_exec(now)
            acted |= self._try_store(now)
            if self.done_at is not None:
                break
            if acted:
                now += 1
                continue
            # Nothing could happen this cycle: jump to the next time something changes.
            candidates = [e[0] for e in self.events[:1]]
            for q in range(3):
                if self.queues[q]:
                    candidates.append(self.queues[q][0][1] + self.t.take - 1)
            if self.ibuf:
                candidates.append(max(self.ibuf[0][1], self.dispatch_ok))
            if self.drained_since is not None:
                candidates.append(self.drained_since + 1)
            candidates += [self.ex_take_ok, self.st_free]
            future = [c for c in candidates if c > now]
            if not future:
                idle_jumps += 1
                if idle_jumps > 2 or not self.events:
                    raise ValueError(self._deadlock(now))
                now += 1
                continue
            idle_jumps = 0
            now = min(future)
        cfg = self.cfg
        return PerfResult(
            cycles=self.done_at + 3, array_busy=self.array_busy,
            macs=self.array_busy * cfg.pes, dram_read_bytes=self.rd.bytes,
            dram_write_bytes=self.wr_bytes, instructions=len(self.insns),
            sram_reads=self.sram_reads, acc_accesses=self.acc_accesses)

    def _deadlock(self, now: int) -> str:
        heads = {name: (str(self.insns[q[0][0]]) if q else None)
                 for name, q in zip(("load", "execute", "store"), self.queues, strict=True)}
        return (f"the program cannot finish: at cycle {now} tokens {self.tok}, queue heads "
                f"{heads}")


def estimate_schedule(config: AcceleratorConfig, m: int, k: int, n: int, s,
                      timing: Timing | None = None) -> float:
    """Return a quick cycle estimate of a :class:`~llmchip.sw.compile.Schedule`.

    ``max(array cycles, read beats, write beats) + fill + drain``, where read beats include
    X re-reads, W, parameters and instruction fetch, and every command adds its gap.
    """
    t = timing or Timing()
    R, C, B = config.rows, config.cols, config.bus_bytes
    kb, nb = -(-k // R), -(-n // C)
    mg, g, kc = min(s.mg, m), min(s.g, nb), min(s.kc, kb)
    ms = min(s.ms, mg)
    mchunks, groups, kchunks = -(-m // mg), -(-nb // g), -(-kb // kc)
    resident = kchunks == 1
    row_beats = -(-R // B)
    x_loads = mchunks * kb * (1 if resident else groups)
    x_beats = m * kb * row_beats * (1 if resident else groups)
    w_beats = mchunks * nb * kb * R * -(-C // B)
    subs = -(-mg // ms)
    matmuls = mchunks * groups * kchunks * g * subs
    stores = mchunks * nb * subs
    loads = x_loads + mchunks * groups * (1 + kchunks * g)
    insns = matmuls + stores + loads
    compute = mchunks * groups * kchunks * g * subs * kc * max(ms, R) + matmuls
    reads = x_beats + w_beats + mchunks * groups * g * 9 * C // B + insns + loads * t.rd_gap
    writes = stores * (t.dram_write_latency + t.wr_done + t.st_first) + m * n // min(B, C)
    # With a single X buffer, the next slab cannot load until the array is done with the
    # current one: each reload is exposed.
    slab, run = mg * kc, g * kc * R
    single = 2 * slab + 2 * run > config.sp_rows
    reloads = (mchunks - 1) if resident else (mchunks * groups * kchunks - 1)
    exposed = reloads * slab * row_beats if single else 0
    first = s.first_ms or ms
    fill = first * kc * row_beats + kc * R + 2 * t.dram_read_latency + 40 + exposed
    drain = kc * max(ms, R) + ms + config.latency + 30
    return max(compute, reads, writes) + fill + drain


def predict_gemm(config: AcceleratorConfig, m: int, k: int, n: int,
                 timing: Timing | None = None) -> dict:
    """Compile an ``m x k x n`` GEMM and predict its cycles, traffic and roofline."""
    from .compile import GemmOp, choose_schedule, compile_gemm

    sch = choose_schedule(config, m, k, n)
    prog = compile_gemm(config, GemmOp(m, k, n, 0, 0, 0, 0), sch)
    res = simulate(prog, timing=timing)
    roof = roofline(config, m, k, n)
    return {"schedule": sch.describe(), "cycles": res.cycles, "array_busy": res.array_busy,
            "dram_read_bytes": res.dram_read_bytes, "dram_write_bytes": res.dram_write_bytes,
            "utilization": m * k * n / config.pes / res.cycles,
            "roofline_efficiency": roof["ideal_cycles"] / res.cycles, **roof}
