"""Energy estimates from an accelerator run's counters.

Per-operation energies at 45 nm (Horowitz, ISSCC 2014), as listed in the DVFS
specification: an int8 multiply 0.2 pJ and an int32 add 0.1 pJ per MAC; a 64-bit SRAM
access 10 pJ at 8 KB, 20 pJ at 32 KB and 100 pJ at 1 MB (interpolated in log size);
DRAM 1.3-2.6 nJ per 64 bits (the midpoint is used). These are taken at 0.9 V and scale
with the square of the supply voltage. This is dynamic energy only; static power and
the thermal plant belong to the DVFS controller's model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmchip.config import AcceleratorConfig

__all__ = ["EnergyModel", "OPERATING_POINTS", "estimate_energy"]

#: (MHz, mV) operating points of the DVFS specification, lowest first.
OPERATING_POINTS = ((200, 800), (297, 800), (400, 825), (500, 875), (600, 925), (800, 1100))


@dataclass(frozen=True)
class EnergyModel:
    """Energies in picojoules at ``v_ref`` volts."""

    mac_pj: float = 0.2 + 0.1
    sram_pj_per_64b: tuple = ((8 << 10, 10.0), (32 << 10, 20.0), (1 << 20, 100.0))
    dram_pj_per_64b: float = (1300.0 + 2600.0) / 2
    v_ref: float = 0.9

    def sram_pj(self, size_bytes: int) -> float:
        """Energy of one 64-bit access to an SRAM of ``size_bytes``."""
        pts = self.sram_pj_per_64b
        if size_bytes <= pts[0][0]:
            return pts[0][1]
        for (s0, e0), (s1, e1) in zip(pts, pts[1:], strict=False):
            if size_bytes <= s1:
                t = math.log(size_bytes / s0) / math.log(s1 / s0)
                return e0 + t * (e1 - e0)
        s0, e0 = pts[-2]
        s1, e1 = pts[-1]
        return e1 + (e1 - e0) * math.log(size_bytes / s1) / math.log(s1 / s0)


def estimate_energy(config: AcceleratorConfig, counters: dict, *, mhz: int = 800,
                    mv: int = 1100, model: EnergyModel | None = None) -> dict:
    """Return the dynamic energy of a run in microjoules, by component, and its power.

    ``counters`` holds ``macs``, ``dram_read_bytes``, ``dram_write_bytes``, ``cycles`` and,
    when known, ``sram_reads`` (scratchpad rows read by the array) and ``acc_accesses``
    (accumulator rows written or read), as :attr:`llmchip.sw.runtime.Device.totals` does.
    """
    em = model or EnergyModel()
    derived = config.to_dict()["derived"]
    scale = (mv / 1000.0 / em.v_ref) ** 2
    width = max(config.rows, config.cols)
    dram_bytes = counters.get("dram_read_bytes", 0) + counters.get("dram_write_bytes", 0)
    sp_words = (counters.get("sram_reads", 0) * width
                + counters.get("dram_read_bytes", 0)) / 8      # reads plus DMA fills
    acc_words = counters.get("acc_accesses", 0) * config.cols * config.acc_width / 8 / 8
    parts_pj = {
        "mac": counters.get("macs", 0) * em.mac_pj,
        "scratchpad": sp_words * em.sram_pj(derived["sp_bytes"]),
        "accumulator": acc_words * em.sram_pj(derived["acc_bytes"]),
        "dram": dram_bytes / 8 * em.dram_pj_per_64b,
    }
    total_uj = sum(parts_pj.values()) * scale * 1e-6
    seconds = counters.get("cycles", 0) / (mhz * 1e6)
    return {"total_uj": total_uj,
            "parts_uj": {k: v * scale * 1e-6 for k, v in parts_pj.items()},
            "mhz": mhz, "mv": mv, "seconds": seconds,
            "avg_power_w": total_uj * 1e-6 / seconds if seconds else 0.0}
