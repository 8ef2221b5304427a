"""FPGA flows: synthesis, place and route and resource/Fmax reports for generated designs."""

from .flow import FLOW_VERSION, TOPS, count_resources, mult_mapping, run_flow
from .targets import TARGETS, Target, get_target
from .wrapper import PortWrapper, core_for

__all__ = ["FLOW_VERSION", "TOPS", "TARGETS", "Target", "get_target", "run_flow",
           "count_resources", "mult_mapping", "PortWrapper", "core_for"]
