"""Emit Verilog and the ``params.json`` sidecar for a configuration."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Signal, Value

from llmchip.config import AcceleratorConfig

from .systolic import SystolicArray

__all__ = ["TOPS", "Generated", "verilog_text", "generate"]

#: Top-level designs that can be generated, by name.
TOPS = ("array",)


def _top_module_name(config: AcceleratorConfig, top: str) -> str:
    return f"llmchip_{top}"


def verilog_text(config: AcceleratorConfig, top: str = "array") -> str:
    """Return the Verilog of ``top`` for ``config`` (reproducible: no source paths).

    Raises
    ------
    ValueError
        If ``top`` is not one of :data:`TOPS`.
    """
    if top not in TOPS:
        raise ValueError(f"top must be one of {', '.join(TOPS)}, not {top!r}")
    design = SystolicArray(config)
    # Members fixed by the signature (the ``ready`` of an always-ready stream) are
    # constants, not ports; Verilog gets only the real signals.
    ports = [Value.cast(value) for _, _, value in design.signature.flatten(design)]
    ports = [value for value in ports if isinstance(value, Signal)]
    return verilog.convert(design, name=_top_module_name(config, top), ports=ports,
                           emit_src=False)


@dataclass(frozen=True)
class Generated:
    """What :func:`generate` wrote."""

    config: AcceleratorConfig
    top: str
    module: str
    verilog: Path
    params: Path
    sha256: str
    seconds: float
    lines: int

    def summary(self) -> dict:
        """Return a JSON-ready summary (paths as strings)."""
        return {
            "top": self.top, "module": self.module, "verilog": str(self.verilog),
            "params": str(self.params), "sha256": self.sha256,
            "seconds": round(self.seconds, 3), "verilog_lines": self.lines,
            "config": self.config.to_dict()["config"],
            "derived": self.config.to_dict()["derived"],
        }


def generate(config: AcceleratorConfig, out_dir: str | Path, top: str = "array") -> Generated:
    """Write ``<module>.v`` and ``params.json`` for ``config`` into ``out_dir``.

    The sidecar records the module name, the Verilog file name and its SHA-256, so
    testbenches and build caches can tell which Verilog it describes.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    text = verilog_text(config, top)
    seconds = time.perf_counter() - t0
    module = _top_module_name(config, top)
    vpath = out / f"{module}.v"
    vpath.write_text(text)
    digest = hashlib.sha256(text.encode()).hexdigest()
    ppath = config.write_params(out / "params.json", top=top, module=module,
                                verilog=vpath.name, verilog_sha256=digest)
    # Round-trip check: the sidecar must describe exactly this config.
    assert AcceleratorConfig.from_dict(json.loads(ppath.read_text())) == config
    return Generated(config, top, module, vpath, ppath, digest, seconds,
                     text.count("\n"))
