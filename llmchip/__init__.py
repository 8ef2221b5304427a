"""llmchip: generate int8 systolic-array accelerators, verify them, run quantized models on them."""

from .config import AcceleratorConfig

__all__ = ["AcceleratorConfig", "open", "__version__"]


def open(config: AcceleratorConfig | None = None, backend: str = "model", **options):  # noqa: A001
    """Return a :class:`llmchip.sw.runtime.Device` running ``config`` on ``backend``.

    ``backend`` is ``"model"`` (bit-exact Python executor with a cycle model),
    ``"verilator"`` or ``"icarus"`` (the generated RTL under cocotb).
    """
    from .sw.runtime import open_device

    return open_device(config, backend, **options)
__version__ = "0.1.0"
