"""A simulation DRAM with fixed, documented timing, and a top that puts it behind the accelerator.

:class:`SimDram` is an AXI4 subordinate in front of a word array; it runs inside the
simulator, so whole programs run without Python serving bus beats. :class:`System` wires
it to :class:`~llmchip.rtl.accelerator.Accelerator`; the host sees only the CSR port, the
interrupt and the word array itself, which it writes and reads through the simulator's
hierarchy (``dram.storage.mem``, see docs/runtime-rtl.md).
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.back import verilog
from amaranth.hdl import (
    ClockDomain,
    ClockSignal,
    DomainRenamer,
    Instance,
    Module,
    Mux,
    ResetSignal,
    Signal,
    signed,
    unsigned,
)
from amaranth.lib import data, fifo, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from llmchip.config import AcceleratorConfig, check_int
from llmchip.rtl.accelerator import ADDR_BITS, Accelerator, dvfs_params
from llmchip.rtl.axi import AxiBurst, AxiResp, axi4_signature, axi4lite_signature
from llmchip.rtl.csr import ADDR_WIDTH as CSR_ADDR_WIDTH
from llmchip.rtl.generate import component_ports
from llmchip.rtl.pe import _rejected

__all__ = ["SimDram", "System", "MEMORY_NAME", "STORAGE_MODULE", "STORAGE_VERILOG", "LOAD_FILE",
           "SYSTEM_MODULE", "SYSTEM_PUBLIC_VLT", "system_verilog"]

#: Instance name of the word array inside SimDram.
MEMORY_NAME = "storage"
#: Verilog module of the word array when SimDram is built with ``storage="verilog"``.
STORAGE_MODULE = "llmchip_simdram_storage"
#: Verilog module name of :class:`System`.
SYSTEM_MODULE = "llmchip_system"

#: Verilator configuration for System builds: the only signals cocotb reaches are the
#: top-level ones (``clk``, ``rst``, ``csr__*``, ``irq``) and the DRAM array, read and
#: written directly by the session bench. Built with this instead of cocotb's
#: ``--public-flat-rw``, Verilator no longer treats every signal as writable from outside
#: and runs the System several times faster (see docs/runtime-rtl.md).
SYSTEM_PUBLIC_VLT = f"""`verilator_config
public_flat_rw -module "{SYSTEM_MODULE}" -var "*"
public_flat_rw -module "{STORAGE_MODULE}" -var "mem"
public_flat_rw -module "{STORAGE_MODULE}" -var "load*"
"""

#: File the session's bulk DRAM writes go through (see STORAGE_VERILOG).
LOAD_FILE = "llmchip_dram_load.hex"

#: The word array as hand-written Verilog. Amaranth writes a memory's initial contents
#: out word by word, and the time to do so grows faster than linearly (a 1 MiB memory
#: takes ~30 s to convert, 4 MiB ~8 min); this module zeroes its array with a loop at
#: time 0 instead, so a DRAM of any size converts at once. Its ports behave exactly like
#: an ``amaranth.lib.memory.Memory`` with one synchronous read port and one write port of
#: byte granularity. The array ``mem`` is what the host reads and writes directly.
STORAGE_VERILOG = f"""
module {STORAGE_MODULE} #(parameter WIDTH = 128, parameter WORDS = 16, parameter ABITS = 4) (
  input clk,
  input rd_en,
  input [ABITS-1:0] rd_addr,
  output reg [WIDTH-1:0] rd_data,
  input [WIDTH/8-1:0] wr_en,
  input [ABITS-1:0] wr_addr,
  input [WIDTH-1:0] wr_data
);
  reg [WIDTH-1:0] mem [0:WORDS-1];
  wire [WIDTH-1:0] mask;
  genvar lane;
  generate
    for (lane = 0; lane < WIDTH / 8; lane = lane + 1) begin : lanes
      assign mask[8 * lane +: 8] = {{8{{wr_en[lane]}}}};
    end
  endgenerate
  // Bulk load for the host: it writes words to {LOAD_FILE} (in the simulator's working
  // folder), sets load_first and load_last and raises load; the next clock edge reads the
  // file into mem[load_first..load_last].
  reg load;
  reg [ABITS-1:0] load_first;
  reg [ABITS-1:0] load_last;
  integer i;
  initial begin
    rd_data = {{WIDTH{{1'b0}}}};
    load = 1'b0;
    load_first = {{ABITS{{1'b0}}}};
    load_last = {{ABITS{{1'b0}}}};
    for (i = 0; i < WORDS; i = i + 1) mem[i] = {{WIDTH{{1'b0}}}};
  end
  always @(posedge clk) begin
    if (rd_en) rd_data <= mem[rd_addr];
    if (|wr_en) mem[wr_addr] <= (mem[wr_addr] & ~mask) | (wr_data & mask);
    if (load) begin
      $readmemh("{LOAD_FILE}", mem, load_first, load_last);
      load <= 1'b0;
    end
  end
endmodule
"""

# A free-running cycle counter timestamps every burst; comparisons are modulo 2**32, so a
# response may be held back (rready/bready low) for up to 2**31 cycles without confusion.
_TIME_BITS = 32


class SimDram(wiring.Component):
    """AXI4 subordinate backed by ``size`` bytes of simulated memory.

    Timing (cycle 0 is the cycle of the address handshake):

    * ``arready`` and ``awready`` are high whenever the burst queue has room
      (``queue_depth`` bursts per direction), so an address is accepted every cycle.
    * Reads: ``rvalid`` of a burst's first beat rises ``read_latency`` cycles after its AR
      handshake (later only if an earlier burst still occupies the R channel or ``rready``
      stalls it); the remaining beats follow one per cycle, and bursts follow each other
      back to back, so single-beat reads issued every cycle return one beat per cycle.
    * Writes: ``wready`` is high from the cycle after the AW handshake while the response
      queue has room; one W beat per cycle, byte strobes honoured. ``bvalid`` rises
      ``write_latency`` cycles after the burst's last W beat.
    * Only INCR bursts of full-width beats are served; any other burst type or size gets
      SLVERR for the whole burst (reads return zeros, writes are dropped). A beat whose
      word lies at or beyond ``size`` gets DECERR (reads return zeros, the write is
      dropped; the burst's B response is DECERR if any beat was). Nothing hangs.
    * Every response echoes the ID of its request; responses come in request order.

    Parameters
    ----------
    size : int
        Bytes of memory, a positive multiple of ``data_width / 8``.
    data_width : int
        AXI data width, one of :data:`llmchip.rtl.axi.AXI4_DATA_WIDTHS`.
    addr_width : int
        AXI byte address width, 12 to 64.
    id_width : int
        AXI ID width, 1 to 32.
    read_latency : int
        Cycles from AR handshake to the first R beat, at least 2. It stands for the DDR
        controller plus the interconnect; the default 8 cycles is a lightly loaded
        on-chip path to a controller with an open row.
    write_latency : int
        Cycles from the last W handshake to ``bvalid``, at least 1.
    queue_depth : int
        Bursts queued per direction, at least 2 (the R channel stays busy with
        single-beat bursts only if ``queue_depth > read_latency``).
    storage : {"memory", "verilog"}
        The word array: an ``amaranth.lib.memory.Memory`` (for Amaranth's simulator), or
        an instance of :data:`STORAGE_MODULE` (for Verilog; append
        :data:`STORAGE_VERILOG` to the output, as :func:`system_verilog` does).

    Raises
    ------
    TypeError
        If a parameter is not an int.
    ValueError
        If a parameter is out of range; the message names it and its value.
    """

    def __init__(self, size: int, data_width: int = 128, *, addr_width: int = 32,
                 id_width: int = 1, read_latency: int = 8, write_latency: int = 2,
                 queue_depth: int = 32, storage: str = "memory"):
        try:
            # The bus signature checks addr_width, data_width and id_width.
            bus = axi4_signature(addr_width, data_width, id_width)
            check_int("size", size, data_width // 8, 1 << addr_width)
            if size % (data_width // 8):
                raise ValueError(f"size must be a multiple of {data_width // 8} bytes, "
                                 f"not {size!r}")
            check_int("read_latency", read_latency, 2, 1 << 16)
            check_int("write_latency", write_latency, 1, 1 << 16)
            check_int("queue_depth", queue_depth, 2, 4096)
            if storage not in ("memory", "verilog"):
                raise ValueError(f"storage must be 'memory' or 'verilog', not {storage!r}")
        except (TypeError, ValueError) as exc:
            raise _rejected(self, exc) from None
        self.storage = storage
        self.size, self.data_width, self.addr_width = size, data_width, addr_width
        self.id_width, self.read_latency, self.write_latency = id_width, read_latency, write_latency
        self.queue_depth = queue_depth
        self.beat_bytes = data_width // 8
        self.words = size // self.beat_bytes
        super().__init__({"bus": In(bus)})

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        B = self.beat_bytes
        size_log2 = B.bit_length() - 1
        # Word indices carry 9 spare bits so the end of a 256-beat burst never wraps.
        word_bits = self.addr_width - size_log2 + 9

        rd, wr = self._word_array(m)

        now = Signal(_TIME_BITS)
        m.d.sync += now.eq(now + 1)

        def due(when):
            # Reached once ``now - when`` is non-negative (modulo 2**_TIME_BITS).
            return ~(now - when)[_TIME_BITS - 1]

        burst = data.StructLayout({
            "id": self.id_width, "word": word_bits, "len": 8, "bad": 1,
            "time": _TIME_BITS,
        })

        def accepts(size, kind):
            return (size == size_log2) & (kind == AxiBurst.INCR)

        # -- reads ------------------------------------------------------------------------
        m.submodules.ar_queue = arq = fifo.SyncFIFO(width=burst.size, depth=self.queue_depth)
        ar = Signal(burst)
        m.d.comb += [
            ar.id.eq(bus.arid), ar.word.eq(bus.araddr >> size_log2), ar.len.eq(bus.arlen),
            ar.bad.eq(~accepts(bus.arsize, bus.arburst)),
            # The first beat leaves the memory one cycle after it is issued.
            ar.time.eq(now + self.read_latency - 1),
            arq.w_data.eq(ar), arq.w_en.eq(bus.arvalid), bus.arready.eq(arq.w_rdy),
        ]
        head = Signal(burst)
        m.d.comb += head.eq(arq.r_data)
        r_beat = Signal(8)       # beat of the head burst to issue next
        r_word = Signal(word_bits)
        m.d.comb += r_word.eq(head.word + r_beat)

        # One pipeline stage: the memory's registered output is the R channel's data, and
        # a stall holds it (the read port is disabled while the stage is full and stalled).
        r_full = Signal()
        r_id = Signal(self.id_width)
        r_last, r_zero = Signal(), Signal()
        r_resp = Signal(AxiResp)
        advance = Signal()
        issue = Signal()
        out_of_range = Signal()
        m.d.comb += [
            advance.eq(~r_full | bus.rready),
            issue.eq(advance & arq.r_rdy & due(head.time)),
            out_of_range.eq(r_word >= self.words),
            rd.en.eq(advance),
            rd.addr.eq(r_word[:rd.addr.shape().width]),
            arq.r_en.eq(issue & (r_beat == head.len)),
            bus.rvalid.eq(r_full), bus.rid.eq(r_id), bus.rlast.eq(r_last),
            bus.rresp.eq(r_resp), bus.rdata.eq(Mux(r_zero, 0, rd.data)),
        ]
        with m.If(advance):
            m.d.sync += r_full.eq(issue)
        with m.If(issue):
            m.d.sync += [
                r_id.eq(head.id), r_last.eq(r_beat == head.len),
                r_zero.eq(head.bad | out_of_range),
                r_resp.eq(Mux(head.bad, AxiResp.SLVERR,
                              Mux(out_of_range, AxiResp.DECERR, AxiResp.OKAY))),
                r_beat.eq(Mux(r_beat == head.len, 0, r_beat + 1)),
            ]

        # -- writes -----------------------------------------------------------------------
        m.submodules.aw_queue = awq = fifo.SyncFIFO(width=burst.size, depth=self.queue_depth)
        aw = Signal(burst)
        m.d.comb += [
            aw.id.eq(bus.awid), aw.word.eq(bus.awaddr >> size_log2), aw.len.eq(bus.awlen),
            aw.bad.eq(~accepts(bus.awsize, bus.awburst)),
            awq.w_data.eq(aw), awq.w_en.eq(bus.awvalid), bus.awready.eq(awq.w_rdy),
        ]
        resp = data.StructLayout({"id": self.id_width, "resp": 2, "time": _TIME_BITS})
        m.submodules.b_queue = bq = fifo.SyncFIFO(width=resp.size, depth=self.queue_depth)
        whead = Signal(burst)
        m.d.comb += whead.eq(awq.r_data)
        w_beat = Signal(8)
        w_word = Signal(word_bits)
        w_decerr = Signal()      # an earlier beat of this burst was out of range
        w_take = Signal()
        w_ok = Signal()
        w_end = Signal()
        m.d.comb += [
            w_word.eq(whead.word + w_beat),
            w_ok.eq(~whead.bad & (w_word < self.words)),
            bus.wready.eq(awq.r_rdy & bq.w_rdy),
            w_take.eq(bus.wvalid & bus.wready),
            w_end.eq(w_take & (w_beat == whead.len)),
            wr.addr.eq(w_word[:wr.addr.shape().width]), wr.data.eq(bus.wdata),
            wr.en.eq(Mux(w_take & w_ok, bus.wstrb, 0)),
            awq.r_en.eq(w_end),
        ]
        with m.If(w_take):
            m.d.sync += [w_beat.eq(Mux(w_end, 0, w_beat + 1)),
                         w_decerr.eq(~w_end & (w_decerr | ~w_ok))]
        b_new = Signal(resp)
        m.d.comb += [
            b_new.id.eq(whead.id),
            b_new.resp.eq(Mux(whead.bad, AxiResp.SLVERR,
                              Mux(w_decerr | (w_word >= self.words), AxiResp.DECERR,
                                  AxiResp.OKAY))),
            # The entry is visible from the next cycle; bvalid rises write_latency cycles
            # after the last beat.
            b_new.time.eq(now + self.write_latency),
            bq.w_data.eq(b_new), bq.w_en.eq(w_end),
        ]
        b_head = Signal(resp)
        m.d.comb += [
            b_head.eq(bq.r_data),
            bus.bvalid.eq(bq.r_rdy & due(b_head.time)),
            bus.bid.eq(b_head.id), bus.bresp.eq(b_head.resp),
            bq.r_en.eq(bus.bvalid & bus.bready),
        ]
        return m

    def _word_array(self, m):
        """Add the word array; return its read and write ports (as namespaces of signals)."""
        abits = max(1, (self.words - 1).bit_length())
        rd = SimpleNamespace(en=Signal(), addr=Signal(abits), data=Signal(self.data_width))
        wr = SimpleNamespace(en=Signal(self.beat_bytes), addr=Signal(abits),
                             data=Signal(self.data_width))
        if self.storage == "memory":
            mem = Memory(shape=unsigned(self.data_width), depth=self.words, init=[])
            m.submodules[MEMORY_NAME] = mem
            rp = mem.read_port(domain="sync")
            wp = mem.write_port(granularity=8)
            m.d.comb += [rp.en.eq(rd.en), rp.addr.eq(rd.addr), rd.data.eq(rp.data),
                         wp.en.eq(wr.en), wp.addr.eq(wr.addr), wp.data.eq(wr.data)]
        else:
            m.submodules[MEMORY_NAME] = Instance(
                STORAGE_MODULE, p_WIDTH=self.data_width, p_WORDS=self.words, p_ABITS=abits,
                i_clk=ClockSignal(), i_rd_en=rd.en, i_rd_addr=rd.addr, o_rd_data=rd.data,
                i_wr_en=wr.en, i_wr_addr=wr.addr, i_wr_data=wr.data)
        return rd, wr


class System(wiring.Component):
    """The accelerator with a :class:`SimDram` on its AXI4 manager port.

    External ports: ``clk``/``rst`` (the default domain), ``csr`` (AXI4-Lite subordinate,
    Verilog ``csr__awaddr``, ...) and ``irq``. The reset is registered once inside, so the
    design leaves reset one cycle after ``rst`` falls. The DRAM's word array is
    ``dram.storage.mem`` in the Verilog hierarchy (with the default ``storage``).

    With ``config.dvfs`` the DVFS controller's platform is simulated here too: an ideal
    regulator and PLL (:class:`~llmchip.rtl.dvfs.DvfsPlatformModel`, acknowledging and
    relocking after a few ticks), and the sensor and PROCHOT as input ports the bench
    drives, ``sensor_temp_mc``, ``sensor_valid`` and ``prochot`` (registered once inside,
    like the reset). ``thermtrip`` is an output.

    Parameters
    ----------
    config : AcceleratorConfig
    dram_bytes : int
        Bytes of simulated DRAM (a multiple of ``config.bus_bytes``).
    read_latency, write_latency, storage
        Passed to :class:`SimDram`.

    Raises
    ------
    TypeError, ValueError
        As :class:`~llmchip.rtl.accelerator.Accelerator` and :class:`SimDram`.
    """

    def __init__(self, config: AcceleratorConfig, dram_bytes: int = 1 << 24,
                 read_latency: int = 8, write_latency: int = 2, *, storage: str = "verilog"):
        if not isinstance(config, AcceleratorConfig):
            raise _rejected(self, TypeError(
                f"config must be an AcceleratorConfig, not {type(config).__name__}"))
        self.config = config
        try:
            self.dram = SimDram(dram_bytes, config.bus_bits, addr_width=ADDR_BITS,
                                read_latency=read_latency, write_latency=write_latency,
                                storage=storage)
        except (TypeError, ValueError) as exc:
            raise _rejected(self, exc) from None
        try:
            self.accelerator = Accelerator(config)
        except (TypeError, ValueError) as exc:
            _rejected(self.dram, exc)
            raise _rejected(self, exc) from None
        members = {"csr": Out(axi4lite_signature(CSR_ADDR_WIDTH, 32)), "irq": Out(1)}
        if config.dvfs:
            from llmchip.sw.dvfs import TEMP_BITS
            members.update({"sensor_temp_mc": In(signed(TEMP_BITS)), "sensor_valid": In(1),
                            "prochot": In(1), "thermtrip": Out(1)})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        # Everything runs in a domain whose reset is the `rst` port registered once. Verilator
        # re-evaluates all logic that depends combinationally on a top-level input at every
        # evaluation (each clock edge, both directions); Amaranth's next-state logic depends
        # on the reset everywhere, so an unregistered reset port made the whole design input
        # logic and cost three times the simulation speed.
        m.domains.core = ClockDomain("core")
        m.domains.reset_reg = ClockDomain("reset_reg", reset_less=True)
        core_rst = Signal(init=1)
        m.d.comb += [ClockSignal("core").eq(ClockSignal()),
                     ClockSignal("reset_reg").eq(ClockSignal()),
                     ResetSignal("core").eq(core_rst)]
        m.d.reset_reg += core_rst.eq(ResetSignal())
        m.submodules.accel = DomainRenamer("core")(self.accelerator)
        m.submodules.dram = DomainRenamer("core")(self.dram)
        wiring.connect(m, self.accelerator.bus, self.dram.bus)
        wiring.connect(m, wiring.flipped(self.csr), self.accelerator.csr)
        m.d.comb += self.irq.eq(self.accelerator.irq)
        if self.config.dvfs:
            from llmchip.rtl.dvfs import DvfsPlatformModel
            port = self.accelerator.dvfs
            plat = DvfsPlatformModel(dvfs_params(self.config))
            m.submodules.dvfs_platform = DomainRenamer("core")(plat)
            temp = Signal(signed(len(port.temp_mc)), name="sensor_temp_r")
            valid, prochot = Signal(name="sensor_valid_r"), Signal(name="prochot_r")
            m.d.reset_reg += [temp.eq(self.sensor_temp_mc), valid.eq(self.sensor_valid),
                              prochot.eq(self.prochot)]
            m.d.comb += [
                port.temp_mc.eq(temp), port.temp_valid.eq(valid),
                port.prochot_i.eq(prochot),
                plat.tick.eq(port.tick), plat.v_req_mv.eq(port.v_req_mv),
                plat.v_req_valid.eq(port.v_req_valid), plat.f_index.eq(port.f_index),
                port.v_ack.eq(plat.v_ack), port.pll_lock.eq(plat.pll_lock),
                self.thermtrip.eq(port.thermtrip),
            ]
        return m


def system_verilog(config: AcceleratorConfig, dram_bytes: int = 1 << 24,
                   read_latency: int = 8, write_latency: int = 2) -> str:
    """Return the Verilog of :class:`System` (module :data:`SYSTEM_MODULE`, no source paths).

    Raises
    ------
    TypeError, ValueError
        As :class:`System`.
    """
    design = System(config, dram_bytes, read_latency, write_latency)
    return verilog.convert(design, name=SYSTEM_MODULE, ports=component_ports(design),
                           emit_src=False) + STORAGE_VERILOG
