"""FPGA parts the flow targets: boards (from amaranth-boards), capacities and tool support."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Target", "TARGETS", "ROUTERS", "get_target"]

#: nextpnr's routers (``--router``).
ROUTERS = ("router1", "router2")


@dataclass(frozen=True)
class Target:
    """One FPGA part and the board that carries it.

    Attributes
    ----------
    name : str
        Name used on the command line (``"ecp5-85k"``).
    family : {"ecp5", "ice40", "xc7"}
        Selects the Yosys ``synth_*`` command and the nextpnr binary.
    part, package, speed : str
        Device as the vendor names it.
    board : str
        The amaranth-boards platform class that supplies pins and clock.
    luts, ffs, dsps, brams : int
        Capacities: 4-input LUTs (6-input on xc7), flip-flops, hard multipliers
        (MULT18X18D, SB_MAC16, DSP48E1) and block RAMs (DP16KD, SB_RAM40_4K, RAMB36E1).
    dsp_width : (int, int)
        Widest signed multiply one hard multiplier does (``packed`` needs 25 x 8 for int8).
    pnr : bool
        Whether place and route (and so Fmax) is available; otherwise synthesis only.
    freq_mhz : float
        Clock target given to nextpnr; only steers its effort, Fmax is what it achieves.
    """

    name: str
    family: str
    part: str
    package: str
    speed: str
    board: str
    luts: int
    ffs: int
    dsps: int
    brams: int
    dsp_width: tuple[int, int]
    pnr: bool
    freq_mhz: float

    def platform(self):
        """Return an instance of the board's amaranth-boards platform."""
        if self.board == "ULX3S_85F_Platform":
            from amaranth_boards.ulx3s import ULX3S_85F_Platform as cls
        elif self.board == "ICEBreakerPlatform":
            from amaranth_boards.icebreaker import ICEBreakerPlatform as cls
        else:
            from amaranth_boards.arty_a7 import ArtyA7_100Platform as cls
        return cls()

    def capacity(self) -> dict[str, int]:
        """Return the capacities as ``{"luts", "ffs", "dsps", "brams"}``."""
        return {"luts": self.luts, "ffs": self.ffs, "dsps": self.dsps, "brams": self.brams}

    def summary(self) -> dict:
        """Return a JSON-ready description."""
        return {"name": self.name, "family": self.family, "part": self.part,
                "package": self.package, "speed": self.speed, "board": self.board,
                "capacity": self.capacity(), "dsp_width": list(self.dsp_width),
                "pnr": self.pnr}


#: Supported targets by name.
TARGETS: dict[str, Target] = {t.name: t for t in (
    # ULX3S with the 85k-LUT ECP5; 156 18x18 multipliers, 208 18-kbit EBRs.
    Target("ecp5-85k", "ecp5", "LFE5U-85F", "CABGA381", "6", "ULX3S_85F_Platform",
           luts=83640, ffs=83640, dsps=156, brams=208, dsp_width=(18, 18), pnr=True,
           freq_mhz=200.0),
    # iCEBreaker; 8 16x16 SB_MAC16, 30 4-kbit EBRs (the 4 SPRAMs are not used).
    Target("ice40-up5k", "ice40", "iCE40UP5K", "SG48", "", "ICEBreakerPlatform",
           luts=5280, ffs=5280, dsps=8, brams=30, dsp_width=(16, 16), pnr=True,
           freq_mhz=50.0),
    # Arty A7-100T; 240 DSP48E1 (25x18), 135 36-kbit BRAMs. No open place and route.
    Target("xc7a100t", "xc7", "xc7a100t", "csg324", "1", "ArtyA7_100Platform",
           luts=63400, ffs=126800, dsps=240, brams=135, dsp_width=(25, 18), pnr=False,
           freq_mhz=0.0),
)}


def get_target(name) -> Target:
    """Return the :class:`Target` called ``name``.

    Raises
    ------
    ValueError
        If there is no such target.
    """
    if isinstance(name, Target):
        return name
    if name not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, not {name!r}")
    return TARGETS[name]
