"""Transformer models written once against the executor protocol of :mod:`llmchip.sw.quant`."""
