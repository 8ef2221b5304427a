"""FPGA flows: synthesis, place and route and resource/Fmax reports for generated designs."""
