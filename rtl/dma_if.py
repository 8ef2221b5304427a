"""The DMA's port layouts and error codes, as the units that use the DMA see them.

One definition lives in :mod:`llmchip.rtl.dma`; this module names it for the load unit,
store unit and command processor (so their ports connect with ``wiring.connect``) and maps
DMA errors to the accelerator's ``STATUS.error`` codes.
"""

from __future__ import annotations

from amaranth.hdl import Mux

from llmchip.sw import regs

from .dma import DONE_LAYOUT, DmaError, command_layout, read_data_layout, write_data_layout

__all__ = ["DmaError", "dma_cmd_layout", "dma_data_layout", "dma_done_layout", "error_code"]


def dma_cmd_layout(addr_width: int = 32):
    """A 2D transfer: ``rows`` rows of ``row_bytes`` bytes, row r at ``addr + r * stride``."""
    return command_layout(addr_width)


def dma_data_layout(bus_bytes: int, last: bool = True):
    """One data beat of ``bus_bytes`` bytes (``last`` only on the read side)."""
    return read_data_layout(8 * bus_bytes) if last else write_data_layout(8 * bus_bytes)


def dma_done_layout():
    """Completion of one command."""
    return DONE_LAYOUT


def error_code(dma_error):
    """Map a :class:`DmaError` value (an Amaranth value) to a ``regs.ErrorCode`` value.

    ``ABORTED`` maps to ``NONE``: commands are only aborted by a soft reset, which is not a
    fault of the program.
    """
    return Mux(dma_error == DmaError.SLVERR, regs.ErrorCode.DMA_SLVERR,
               Mux(dma_error == DmaError.DECERR, regs.ErrorCode.DMA_DECERR,
                   Mux(dma_error == DmaError.OUT_OF_WINDOW, regs.ErrorCode.DMA_WINDOW,
                       Mux(dma_error == DmaError.BAD_COMMAND, regs.ErrorCode.DMA_BAD_COMMAND,
                           regs.ErrorCode.NONE))))
