"""Processing element: one signed multiply-accumulate of the systolic array.

Two variants share the class, chosen by the dataflow:

* ``"ws"`` (weight-stationary): holds an *active* weight used by the multiplier and a
  *shadow* weight that belongs to a vertical shift chain, so the next weight tile loads
  while the current one computes. A ``sw`` flag travelling with the activation copies
  shadow to active exactly when the first activation of the next tile arrives.
* ``"os"`` (output-stationary): accumulates ``a * b`` in place; ``first`` restarts the sum,
  ``last`` copies the finished sum into a *shadow* output register that belongs to a
  vertical drain chain, so the next tile accumulates while the previous one drains.

All outputs are registered; products are exact and sums wrap at ``acc_width`` bits.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from llmchip.config import DATAFLOWS

__all__ = ["PE"]


def _rejected(component, exc: Exception) -> Exception:
    """Mark a component whose constructor failed as deliberately unused, return ``exc``.

    Amaranth warns about every elaboratable that is never elaborated, including one whose
    ``__init__`` raised; that warning would only repeat the error being raised.
    """
    component._MustUse__silence = True
    return exc


def _check_min(component, name: str, value, lo: int) -> None:
    """Raise (via :func:`_rejected`) unless ``value`` is an int >= ``lo``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise _rejected(component, ValueError(f"{name} must be an int >= {lo}, not {value!r}"))


class PE(wiring.Component):
    """One processing element.

    Parameters
    ----------
    dataflow : {"ws", "os"}
    in_width, acc_width : int
        Operand and accumulator widths in bits (signed).

    Raises
    ------
    ValueError
        If the dataflow is unknown or a width is not positive.

    Notes
    -----
    Ports, ``"ws"``: ``a_in``/``sw_in`` -> ``a_out``/``sw_out`` (the activation register,
    passed right); ``psum_in`` -> ``psum_out`` (``psum_in + a * active``, passed down);
    ``w_in``/``wen_in`` -> ``w_out`` (the shadow register, passed down) and ``wen_out``
    (``wen_in`` delayed one cycle, passed right).

    Ports, ``"os"``: ``a_in``/``first_in``/``last_in`` -> ``a_out``/``first_out``/
    ``last_out`` (passed right); ``b_in`` -> ``b_out`` (passed down); ``d_in``/``den_in``
    -> ``d_out`` (the shadow output register, passed down) and ``den_out`` (passed right).
    """

    def __init__(self, dataflow: str = "ws", in_width: int = 8, acc_width: int = 32):
        if dataflow not in DATAFLOWS:
            raise _rejected(self, ValueError(
                f"dataflow must be one of {', '.join(DATAFLOWS)}, not {dataflow!r}"))
        _check_min(self, "in_width", in_width, 1)
        _check_min(self, "acc_width", acc_width, 1)
        self.dataflow = dataflow
        self.in_width = in_width
        self.acc_width = acc_width
        op, acc = signed(in_width), signed(acc_width)
        if dataflow == "ws":
            ports = {
                "a_in": In(op), "sw_in": In(1), "a_out": Out(op), "sw_out": Out(1),
                "psum_in": In(acc), "psum_out": Out(acc),
                "w_in": In(op), "wen_in": In(1), "w_out": Out(op), "wen_out": Out(1),
            }
        else:
            ports = {
                "a_in": In(op), "first_in": In(1), "last_in": In(1),
                "a_out": Out(op), "first_out": Out(1), "last_out": Out(1),
                "b_in": In(op), "b_out": Out(op),
                "d_in": In(acc), "den_in": In(1), "d_out": Out(acc), "den_out": Out(1),
            }
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        if self.dataflow == "ws":
            self._elaborate_ws(m)
        else:
            self._elaborate_os(m)
        return m

    def _elaborate_ws(self, m: Module) -> None:
        active = Signal(signed(self.in_width))
        m.d.sync += [
            self.a_out.eq(self.a_in),
            self.sw_out.eq(self.sw_in),
            self.wen_out.eq(self.wen_in),
            # a_out holds the activation being multiplied this cycle; active was switched
            # on the same edge that loaded it, so the first beat of a tile sees new weights.
            self.psum_out.eq(self.psum_in + self.a_out * active),
        ]
        with m.If(self.sw_in):
            m.d.sync += active.eq(self.w_out)
        with m.If(self.wen_in):
            m.d.sync += self.w_out.eq(self.w_in)

    def _elaborate_os(self, m: Module) -> None:
        acc = Signal(signed(self.acc_width))
        total = Signal(signed(self.acc_width))
        m.d.comb += total.eq(Mux(self.first_out, 0, acc) + self.a_out * self.b_out)
        m.d.sync += [
            self.a_out.eq(self.a_in),
            self.first_out.eq(self.first_in),
            self.last_out.eq(self.last_in),
            self.b_out.eq(self.b_in),
            self.den_out.eq(self.den_in),
            acc.eq(total),
        ]
        # A tile's final sum and a drain shift never meet in one PE on the same edge: the
        # array spaces tile ends at least `rows` beats apart (see SystolicArray).
        with m.If(self.last_out):
            m.d.sync += self.d_out.eq(total)
        with m.Elif(self.den_in):
            m.d.sync += self.d_out.eq(self.d_in)
