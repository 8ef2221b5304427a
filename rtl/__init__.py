"""Hardware: Amaranth descriptions of the accelerator blocks and their Verilog generation."""
