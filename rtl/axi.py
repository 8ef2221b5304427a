"""AXI4 and AXI4-Lite port signatures, with the bus's response and burst codes.

Members are named exactly as in the AMBA specification, so a component port named ``bus``
becomes Verilog ``bus__awaddr``, ``bus__rdata``, ... and cocotbext-axi finds the channels
with ``AxiBus.from_prefix(dut, "bus_")`` (or ``AxiLiteBus.from_prefix`` for a CSR port).
"""

from __future__ import annotations

from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

from llmchip.config import check_int

__all__ = ["AxiResp", "AxiBurst", "AXI4_DATA_WIDTHS", "AXI4LITE_DATA_WIDTHS",
           "AXI4_MANAGER_CHANNELS", "AXI4_SUBORDINATE_CHANNELS", "axi4_signature",
           "axi4lite_signature"]

#: Data widths an AXI4 port may have here (bits); beats are whole power-of-two bytes.
AXI4_DATA_WIDTHS = (32, 64, 128, 256, 512)

#: Data widths AXI4-Lite allows (bits).
AXI4LITE_DATA_WIDTHS = (32, 64)

#: The channels of :func:`axi4_signature` the manager drives: (valid, ready, payload).
AXI4_MANAGER_CHANNELS = (
    ("awvalid", "awready", ("awid", "awaddr", "awlen", "awsize", "awburst")),
    ("wvalid", "wready", ("wdata", "wstrb", "wlast")),
    ("arvalid", "arready", ("arid", "araddr", "arlen", "arsize", "arburst")),
)
#: The channels the subordinate drives.
AXI4_SUBORDINATE_CHANNELS = (
    ("bvalid", "bready", ("bid", "bresp")),
    ("rvalid", "rready", ("rid", "rdata", "rresp", "rlast")),
)


class AxiResp(enum.IntEnum, shape=2):
    """``BRESP``/``RRESP`` codes."""

    OKAY = 0b00
    EXOKAY = 0b01
    SLVERR = 0b10
    DECERR = 0b11


class AxiBurst(enum.IntEnum, shape=2):
    """``AWBURST``/``ARBURST`` codes."""

    FIXED = 0b00
    INCR = 0b01
    WRAP = 0b10


def _check_data_width(value, allowed: tuple[int, ...]) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"data_width must be an int, not {type(value).__name__} {value!r}")
    if value not in allowed:
        raise ValueError(f"data_width must be one of {', '.join(map(str, allowed))}, "
                         f"not {value!r}")


def axi4_signature(addr_width: int = 32, data_width: int = 128,
                   id_width: int = 1) -> wiring.Signature:
    """Return the signature of an AXI4 *manager* port (as seen by the manager).

    Only the signals a DMA engine needs are members: no ``*lock``, ``*cache``, ``*prot``,
    ``*qos``, ``*region`` or ``*user`` (cocotbext-axi treats those as optional).

    Parameters
    ----------
    addr_width : int
        Byte address width, 12 to 64 bits.
    data_width : int
        One of :data:`AXI4_DATA_WIDTHS`.
    id_width : int
        Transaction ID width, 1 to 32 bits.

    Raises
    ------
    TypeError
        If a parameter is not an int.
    ValueError
        If a parameter is out of range; the message names it and its value.
    """
    check_int("addr_width", addr_width, 12, 64)
    _check_data_width(data_width, AXI4_DATA_WIDTHS)
    check_int("id_width", id_width, 1, 32)
    strb = data_width // 8
    return wiring.Signature({
        # Write address
        "awid": Out(id_width), "awaddr": Out(addr_width), "awlen": Out(8),
        "awsize": Out(3), "awburst": Out(2), "awvalid": Out(1), "awready": In(1),
        # Write data
        "wdata": Out(data_width), "wstrb": Out(strb), "wlast": Out(1),
        "wvalid": Out(1), "wready": In(1),
        # Write response
        "bid": In(id_width), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
        # Read address
        "arid": Out(id_width), "araddr": Out(addr_width), "arlen": Out(8),
        "arsize": Out(3), "arburst": Out(2), "arvalid": Out(1), "arready": In(1),
        # Read data
        "rid": In(id_width), "rdata": In(data_width), "rresp": In(2), "rlast": In(1),
        "rvalid": In(1), "rready": Out(1),
    })


def axi4lite_signature(addr_width: int = 32, data_width: int = 32) -> wiring.Signature:
    """Return the signature of an AXI4-Lite *subordinate* port (as seen by the subordinate).

    ``awprot``/``arprot`` are left out: cocotbext-axi's ``AxiLiteBus`` treats them as
    optional, and a register file has no use for them.

    Parameters
    ----------
    addr_width : int
        Byte address width, 2 to 64 bits.
    data_width : int
        One of :data:`AXI4LITE_DATA_WIDTHS`.

    Raises
    ------
    TypeError
        If a parameter is not an int.
    ValueError
        If a parameter is out of range; the message names it and its value.
    """
    check_int("addr_width", addr_width, 2, 64)
    _check_data_width(data_width, AXI4LITE_DATA_WIDTHS)
    return wiring.Signature({
        "awaddr": In(addr_width), "awvalid": In(1), "awready": Out(1),
        "wdata": In(data_width), "wstrb": In(data_width // 8), "wvalid": In(1),
        "wready": Out(1),
        "bresp": Out(2), "bvalid": Out(1), "bready": In(1),
        "araddr": In(addr_width), "arvalid": In(1), "arready": Out(1),
        "rdata": Out(data_width), "rresp": Out(2), "rvalid": Out(1), "rready": In(1),
    })
