"""AcceleratorConfig: validation before elaboration, derived values, params.json."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmchip.config import PARAMS_SCHEMA_VERSION, AcceleratorConfig


def test_defaults():
    cfg = AcceleratorConfig()
    assert cfg.dma_outstanding == 16
    assert (cfg.rows, cfg.cols, cfg.dataflow, cfg.in_width, cfg.acc_width) == (8, 8, "ws", 8, 32)
    assert cfg.product_width == 16
    assert cfg.pes == 64
    assert cfg.latency == 16


@pytest.mark.parametrize("field, value, exc, text", [
    ("rows", 0, ValueError, "rows must be between 1 and 256, not 0"),
    ("rows", -3, ValueError, "rows must be between 1 and 256, not -3"),
    ("cols", 257, ValueError, "cols must be between 1 and 256, not 257"),
    ("rows", 2.0, TypeError, "rows must be an int, not float 2.0"),
    ("cols", "4", TypeError, "cols must be an int, not str '4'"),
    ("rows", True, TypeError, "rows must be an int, not bool True"),
    ("dataflow", "is", ValueError, "dataflow must be one of ws, os, not 'is'"),
    ("dataflow", 1, TypeError, "dataflow must be a str, not int 1"),
    ("in_width", 1, ValueError, "in_width must be between 2 and 16, not 1"),
    ("acc_width", 15, ValueError, "acc_width must be between 16 and 64, not 15"),
    ("acc_width", 65, ValueError, "acc_width must be between 16 and 64, not 65"),
    ("dma_outstanding", 4.0, TypeError, "dma_outstanding must be an int, not float 4.0"),
])
def test_bad_values_name_field_and_value(field, value, exc, text):
    with pytest.raises(exc) as info:
        AcceleratorConfig(**{field: value})
    assert str(info.value) == text


def test_frozen_and_replace_revalidates():
    cfg = AcceleratorConfig(rows=4, cols=2)
    with pytest.raises(AttributeError):
        cfg.rows = 3
    assert cfg.replace(cols=5).cols == 5
    with pytest.raises(ValueError, match="cols"):
        cfg.replace(cols=0)


def test_params_json_round_trip(tmp_path):
    cfg = AcceleratorConfig(rows=3, cols=5, dataflow="os", acc_width=24, dma_outstanding=5)
    path = cfg.write_params(tmp_path, module="m")
    assert path == tmp_path / "params.json"
    data = json.loads(path.read_text())
    assert data["config"]["rows"] == 3 and data["derived"]["latency"] == 8
    assert data["config"]["dma_outstanding"] == 5 and data["schema"] == PARAMS_SCHEMA_VERSION
    assert data["module"] == "m"
    assert AcceleratorConfig.read_params(tmp_path) == cfg


def test_params_reject_unknown_schema_and_fields():
    data = AcceleratorConfig().to_dict()
    with pytest.raises(ValueError, match="schema"):
        AcceleratorConfig.from_dict({**data, "schema": 99})
    # Schema 1 had no dma_outstanding: its DMA kept 4 bursts in flight, not the default.
    with pytest.raises(ValueError, match=f"params schema must be {PARAMS_SCHEMA_VERSION}, not 1"):
        AcceleratorConfig.from_dict({**data, "schema": 1})
    with pytest.raises(ValueError, match="unknown config field.*banks"):
        AcceleratorConfig.from_dict({"rows": 2, "banks": 4})


@given(rows=st.integers(1, 256), cols=st.integers(1, 256), df=st.sampled_from(["ws", "os"]),
       iw=st.integers(2, 16), extra=st.integers(0, 32), outstanding=st.integers(1, 64))
def test_valid_configs_round_trip(rows, cols, df, iw, extra, outstanding):
    aw = min(64, 2 * iw + extra)
    cfg = AcceleratorConfig(rows=rows, cols=cols, dataflow=df, in_width=iw, acc_width=aw,
                            dma_outstanding=outstanding)
    assert AcceleratorConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.latency == rows + cols


@pytest.mark.parametrize("field, value, text", [
    ("sp_rows", 100, "sp_rows must be a power of two, not 100"),
    ("sp_rows", 8, "sp_rows must be between 16 and 65536, not 8"),
    ("acc_rows", 3, "acc_rows must be a power of two, not 3"),
    ("param_rows", 1 << 17, "param_rows must be between 2 and 65536"),
    ("sp_banks", 128, "sp_banks must be between 1 and 64, not 128"),
    ("bus_bits", 96, "bus_bits must be one of 64, 128, 256, 512, not 96"),
    ("dma_outstanding", 0, "dma_outstanding must be between 1 and 64, not 0"),
    ("dma_outstanding", 65, "dma_outstanding must be between 1 and 64, not 65"),
])
def test_memory_and_bus_fields_validated(field, value, text):
    with pytest.raises(ValueError, match=text):
        AcceleratorConfig(**{field: value})


def test_banks_at_most_rows_and_derived_sizes():
    with pytest.raises(ValueError, match="sp_banks must be at most sp_rows"):
        AcceleratorConfig(sp_rows=16, sp_banks=32)
    cfg = AcceleratorConfig(rows=16, cols=8, sp_rows=2048, acc_rows=256, bus_bits=256)
    d = cfg.to_dict()["derived"]
    assert d["sp_row_bytes"] == 16 and d["sp_bytes"] == 32768
    assert d["acc_bytes"] == 256 * 8 * 4 and d["bus_bytes"] == 32
