"""Testbenches: simulator setup, cached builds, and cocotb and Amaranth-simulator harnesses."""
