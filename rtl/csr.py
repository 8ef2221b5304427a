"""Control/status registers behind an AXI4-Lite subordinate port, generated from ``sw.regs``.

Ports follow each register's access type in :data:`llmchip.sw.regs.REGISTERS`:

* RW registers become outputs named after the register (lower case) holding the value,
  and a pulse ``<register>_written`` in the cycle a write arrives (the new value is on the
  output from the next cycle).
* RO registers are constants given to the constructor, or inputs named after the
  register; a 64-bit counter pair ``X_LO``/``X_HI`` is one 64-bit input ``x``, and reading
  ``X_LO`` latches the high word for the following read of ``X_HI``.
* W1P registers become one output pulse per field, ``<register>_<field>``.
* RW1C registers become an output ``<register>`` and an input ``<register>_set`` whose
  bits set the register (setting wins over a simultaneous clear).

Accesses to unmapped offsets complete with SLVERR (reads return 0); writes to read-only
registers are ignored with OKAY. One transaction per direction is in flight at a time; a
read's data is valid three cycles after its address is taken (the address is decoded into
registers, then the value is selected in two register stages).

Registers inside an optional *window* of offsets belong to another block (the DVFS
controller): they get no storage here; accesses to them go out on ``ext_*`` (word offset
from the window's start, a write strobe, a read strobe whose data comes back on
``ext_rdata`` one cycle later). Registers inside an optional *absent* range are not built
at all (a block left out of this configuration): their offsets answer like unmapped ones.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from llmchip.sw import regs

from .axi import AxiResp, axi4lite_signature
from .pe import _rejected

__all__ = ["CsrBlock", "ADDR_WIDTH"]

#: Byte address bits of the CSR port (4 KB of register space).
ADDR_WIDTH = 12


def _port(name: str) -> str:
    return name.lower()


def _pairs(window=None, absent=None):
    """Counter pairs outside ``window`` and ``absent``: base name -> (lo, hi register)."""
    out = {}
    for r in regs.REGISTERS:
        if r.name.endswith("_LO") and not _inside(r, window) and not _inside(r, absent):
            out[r.name[:-3]] = (r, regs.by_name(r.name[:-3] + "_HI"))
    return out


def _inside(reg, window) -> bool:
    return window is not None and window[0] <= reg.offset < window[1]


class CsrBlock(wiring.Component):
    """Register file of :data:`llmchip.sw.regs.REGISTERS`.

    Parameters
    ----------
    constants : dict of str to int
        Values of the read-only registers that are fixed at generation time (``ID``,
        ``VERSION``, ``CFG_*``). Every other read-only register becomes an input.
    window : (int, int), optional
        Byte offsets ``[start, end)`` of registers served by another block through the
        ``ext_*`` ports (an aligned power-of-two range).
    absent : (int, int), optional
        Byte offsets ``[start, end)`` of registers not built: SLVERR, reads return 0.

    Raises
    ------
    ValueError
        If a constant names an unknown or writable register or does not fit in 32 bits,
        or the window is not an aligned power-of-two range.
    """

    def __init__(self, constants: dict[str, int], window: tuple[int, int] | None = None,
                 absent: tuple[int, int] | None = None):
        if window is not None:
            start, end = window
            size = end - start
            if size < 8 or size & (size - 1) or start % size:
                raise _rejected(self, ValueError(
                    f"window must be an aligned power-of-two range, not {window!r}"))
        self.window = window
        self.absent = absent
        for name, value in constants.items():
            try:
                reg = regs.by_name(name)
            except KeyError as exc:
                raise _rejected(self, ValueError(str(exc.args[0]))) from None
            if reg.access is not regs.Access.RO:
                raise _rejected(self, ValueError(f"{name} is {reg.access.name}, not a constant"))
            if not 0 <= value < 1 << 32:
                raise _rejected(self, ValueError(f"{name} must fit in 32 bits, not {value}"))
        self.constants = dict(constants)
        members = {"bus": Out(axi4lite_signature(ADDR_WIDTH, 32)), "irq": Out(1)}
        if window is not None:
            members.update({"ext_addr": Out((window[1] - window[0]).bit_length() - 3),
                            "ext_wdata": Out(32), "ext_we": Out(1), "ext_re": Out(1),
                            "ext_rdata": In(32)})
        pairs = _pairs(window, absent)
        paired = {r.name for lo, hi in pairs.values() for r in (lo, hi)}
        for base in pairs:
            members[_port(base)] = In(64)
        for r in regs.REGISTERS:
            if (r.name in paired or r.name in constants or _inside(r, window)
                    or _inside(r, absent)):
                continue
            if r.access is regs.Access.RW:
                members[_port(r.name)] = Out(32, init=r.reset)
                members[f"{_port(r.name)}_written"] = Out(1)
            elif r.access is regs.Access.RO:
                members[_port(r.name)] = In(32)
            elif r.access is regs.Access.W1P:
                for f in r.fields:
                    members[f"{_port(r.name)}_{f.name}"] = Out(1)
            elif r.access is regs.Access.RW1C:
                members[_port(r.name)] = Out(32)
                members[f"{_port(r.name)}_set"] = In(32)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        window = self.window
        own = [r for r in regs.REGISTERS
               if not _inside(r, window) and not _inside(r, self.absent)]
        pairs = _pairs(window, self.absent)
        hi_latch = {base: Signal(32, name=f"{_port(base)}_hi_latch") for base in pairs}

        # -- writes: wait for address and data, apply, respond ---------------------------
        w_take = Signal()
        b_pending = Signal()
        m.d.comb += [
            w_take.eq(bus.awvalid & bus.wvalid & ~b_pending),
            bus.awready.eq(w_take),
            bus.wready.eq(w_take),
            bus.bvalid.eq(b_pending),
        ]
        b_resp = Signal(2)
        m.d.comb += bus.bresp.eq(b_resp)
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += b_pending.eq(0)
        waddr = bus.awaddr[2:ADDR_WIDTH]
        wdata = bus.wdata
        for r in own:
            if r.access is regs.Access.W1P:
                for f in r.fields:
                    m.d.comb += getattr(self, f"{_port(r.name)}_{f.name}").eq(
                        w_take & (waddr == r.offset >> 2) & wdata[f.lsb])
        for r in own:
            if r.access is regs.Access.RW1C:
                value = getattr(self, _port(r.name))
                setting = getattr(self, f"{_port(r.name)}_set")
                clear = Signal(32, name=f"{_port(r.name)}_clear")
                m.d.comb += clear.eq(
                    (w_take & (waddr == r.offset >> 2)).replicate(32) & wdata)
                m.d.sync += value.eq((value & ~clear) | setting)
        # Plain ifs, not a switch: Amaranth splits a switch into one process per register,
        # and each would be an incomplete Verilog case.
        mapped = [r.offset >> 2 for r in regs.REGISTERS if not _inside(r, self.absent)]
        w_hit = Signal()
        with m.Switch(waddr):
            with m.Case(*mapped):
                m.d.comb += w_hit.eq(1)
            with m.Default():
                m.d.comb += w_hit.eq(0)
        with m.If(w_take):
            m.d.sync += [b_pending.eq(1),
                         b_resp.eq(Mux(w_hit, AxiResp.OKAY, AxiResp.SLVERR))]
        for r in own:
            if r.access is regs.Access.RW:
                hit = w_take & (waddr == r.offset >> 2)
                m.d.comb += getattr(self, f"{_port(r.name)}_written").eq(hit)
                with m.If(hit):
                    m.d.sync += getattr(self, _port(r.name)).eq(wdata)

        # -- reads: decode the address, select in two register stages, hold until taken --
        # A read takes three cycles: the address is decoded into one bit per register
        # (`r_hit`, registered), groups of registers are selected by AND-OR into
        # registers (`r_group`), and the groups are ORed into `rdata`. No stage has more
        # than the port's handshake with a decode, or a few LUT levels of AND-OR.
        r_pending = Signal()
        r_sel = Signal()      # r_hit holds a decoded address
        r_or = Signal()       # r_group holds its groups
        r_take = Signal()
        raddr = bus.araddr[2:ADDR_WIDTH]
        r_ok = 1
        if window is not None:
            # Window accesses share the ext_* port: a read waits for its answer, and while
            # a write to the window goes out.
            bits = len(self.ext_addr)
            ext_w, ext_r, ext_wait = Signal(), Signal(), Signal()
            m.d.comb += [ext_w.eq(w_take & (waddr[bits:] == window[0] >> (bits + 2))),
                         ext_r.eq(raddr[bits:] == window[0] >> (bits + 2))]
            r_ok = ~ext_wait & ~(ext_r & ext_w)
        m.d.comb += [
            r_take.eq(bus.arvalid & ~r_pending & ~r_sel & ~r_or & r_ok),
            bus.arready.eq(r_take),
            bus.rvalid.eq(r_pending),
        ]
        rdata, rresp = Signal(32), Signal(2)
        m.d.comb += [bus.rdata.eq(rdata), bus.rresp.eq(rresp)]
        with m.If(bus.rvalid & bus.rready):
            m.d.sync += r_pending.eq(0)
        r_own = r_take
        if window is not None:
            ext_regs = [r.offset >> 2 for r in regs.REGISTERS if _inside(r, window)]
            w_ext_hit, r_ext_hit = Signal(), Signal()
            for hit, addr in ((w_ext_hit, waddr), (r_ext_hit, raddr)):
                with m.Switch(addr):
                    with m.Case(*ext_regs):
                        m.d.comb += hit.eq(1)
            m.d.comb += [
                self.ext_addr.eq(Mux(ext_w, waddr, raddr)),
                self.ext_wdata.eq(wdata),
                self.ext_we.eq(ext_w & w_ext_hit),
                self.ext_re.eq(r_take & ext_r & r_ext_hit),
            ]
            r_own = r_take & ~self.ext_re
            # The block answers one cycle after the read strobe.
            m.d.sync += ext_wait.eq(self.ext_re)
            with m.If(ext_wait):
                m.d.sync += [r_pending.eq(1), rdata.eq(self.ext_rdata),
                             rresp.eq(AxiResp.OKAY)]
        readable = list(own)
        r_hit = Signal(len(readable))
        m.d.sync += r_sel.eq(r_own)
        with m.If(r_own):
            m.d.sync += r_hit.eq(Cat(raddr == r.offset >> 2 for r in readable))
        # Each bit of a group is an OR of up to `group` AND terms.
        group = 8
        groups = [readable[i:i + group] for i in range(0, len(readable), group)]
        r_group = [Signal(32, name=f"r_group{g}") for g in range(len(groups))]
        r_miss2 = Signal()
        m.d.sync += r_or.eq(r_sel)
        with m.If(r_sel):
            m.d.sync += r_miss2.eq(~r_hit.any())     # unmapped: SLVERR, reads 0
            for g, regs_g in enumerate(groups):
                terms = [Mux(r_hit[readable.index(r)], self._read_value(r, pairs, hi_latch), 0)
                         for r in regs_g]
                value = terms[0]
                for t in terms[1:]:
                    value = value | t
                m.d.sync += r_group[g].eq(value)
        with m.If(r_or):
            value = r_group[0]
            for v in r_group[1:]:
                value = value | v
            m.d.sync += [r_pending.eq(1), rdata.eq(value),
                         rresp.eq(Mux(r_miss2, AxiResp.SLVERR, AxiResp.OKAY))]
        # Reading X_LO latches X_HI in the cycle its value is selected.
        for base, (lo, _) in pairs.items():
            with m.If(r_sel & r_hit[readable.index(lo)]):
                m.d.sync += hi_latch[base].eq(getattr(self, _port(base))[32:])

        enable = self.irq_enable
        status = self.irq_status
        m.d.comb += self.irq.eq((enable & status).any())
        return m

    def _read_value(self, r, pairs, hi_latch):
        if r.name in self.constants:
            return self.constants[r.name]
        if r.name.endswith("_LO") and r.name[:-3] in pairs:
            return getattr(self, _port(r.name[:-3]))[:32]
        if r.name.endswith("_HI") and r.name[:-3] in pairs:
            return hi_latch[r.name[:-3]]
        if r.access is regs.Access.W1P:
            return 0
        return getattr(self, _port(r.name))
