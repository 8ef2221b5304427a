"""Stream layouts and error codes of the DMA engine's command and data ports.

Shared by the DMA and the units that use it (load, store, command processor), so their
ports connect with ``wiring.connect``.
"""

from __future__ import annotations

import enum

from amaranth.hdl import Mux, unsigned
from amaranth.lib import data

from llmchip.sw import regs

__all__ = ["DmaError", "dma_cmd_layout", "dma_data_layout", "dma_done_layout", "error_code"]


class DmaError(enum.IntEnum):
    """Completion status of one DMA command."""

    OK = 0
    SLVERR = 1         #: a response was SLVERR
    DECERR = 2         #: a response was DECERR
    OUT_OF_WINDOW = 3  #: a byte outside [window_base, window_base + window_size)
    BAD_COMMAND = 4    #: rows == 0 or row_bytes == 0
    ABORTED = 5        #: stopped by ``abort``


def dma_cmd_layout(addr_width: int = 32) -> data.StructLayout:
    """A 2D transfer: ``rows`` rows of ``row_bytes`` bytes, row r at ``addr + r * stride``."""
    return data.StructLayout({"addr": unsigned(addr_width), "rows": unsigned(16),
                              "row_bytes": unsigned(16), "stride": unsigned(addr_width)})


def dma_data_layout(bus_bytes: int, last: bool = True) -> data.StructLayout:
    """One data beat: ``bus_bytes`` bytes, row byte 0 in lane 0 of a row's first beat."""
    members = {"data": data.ArrayLayout(unsigned(8), bus_bytes)}
    if last:
        members["last"] = unsigned(1)
    return data.StructLayout(members)


def dma_done_layout() -> data.StructLayout:
    """Completion of one command."""
    return data.StructLayout({"error": unsigned(3)})


def error_code(dma_error):
    """Map a :class:`DmaError` value (an Amaranth value) to a ``regs.ErrorCode`` value."""
    return Mux(dma_error == DmaError.SLVERR, regs.ErrorCode.DMA_SLVERR,
               Mux(dma_error == DmaError.DECERR, regs.ErrorCode.DMA_DECERR,
                   Mux(dma_error == DmaError.OUT_OF_WINDOW, regs.ErrorCode.DMA_WINDOW,
                       Mux(dma_error == DmaError.BAD_COMMAND, regs.ErrorCode.DMA_BAD_COMMAND,
                           regs.ErrorCode.NONE))))
