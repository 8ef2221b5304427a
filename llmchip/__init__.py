"""llmchip: generate int8 systolic-array accelerators, verify them, run quantized models on them."""

from .config import AcceleratorConfig

__all__ = ["AcceleratorConfig", "__version__"]
__version__ = "0.1.0"
