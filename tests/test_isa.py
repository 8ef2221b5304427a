"""Instruction set: encode/decode round trips, field checks, RTL layout agreement."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmchip.sw import isa


def test_round_trip_example():
    word = isa.encode("matmul", sp_addr=5, sp_stride=3, rows=128, acc_addr=77, accumulate=1,
                      pop_prev=True, push_next=True)
    insn = isa.decode(word)
    assert insn.op is isa.Opcode.MATMUL
    assert dict(insn.fields) == {"sp_addr": 5, "sp_stride": 3, "rows": 128, "acc_addr": 77,
                                 "accumulate": 1, "k_steps": 0, "w_addr": 0, "a_step": 0}
    assert insn.pop_prev and insn.push_next and not insn.pop_next and not insn.push_prev
    assert str(insn).startswith("matmul sp_addr=5")


def test_matmul_k_loop_round_trip():
    """The K-loop fields follow the plain MATMUL's, at fixed positions and full widths."""
    fields = {"sp_addr": 0xFFFF, "sp_stride": 1, "rows": 0x3FFF, "acc_addr": 2, "accumulate": 0,
              "k_steps": 0xFFF, "w_addr": 0xABCD, "a_step": 0xFFFF}
    word = isa.encode("matmul", **fields, push_prev=True)
    insn = isa.decode(word)
    assert dict(insn.fields) == fields and insn.push_prev and not insn.pop_prev
    assert isa.disassemble(isa.assemble([insn])) == [insn]
    assert word >> 71 == 0xFFF | 0xABCD << 12 | 0xFFFF << 28
    lay = isa.layout(isa.Opcode.MATMUL)
    assert [(lay[f].offset, lay[f].width) for f in ("k_steps", "w_addr", "a_step")] == [
        (71, 12), (83, 16), (99, 16)]
    with pytest.raises(isa.IsaError, match=r"MATMUL.k_steps must be in \[0, 4095\], not 4096"):
        isa.encode("matmul", k_steps=4096)


def test_signed_field():
    insn = isa.decode(isa.encode("config", zero_point=-128, relu=1))
    assert insn.fields["zero_point"] == -128 and insn.fields["relu"] == 1


@pytest.mark.parametrize("kwargs, text", [
    ({"op": "load", "rows": 1 << 14}, "LOAD.rows must be in [0, 16383], not 16384"),
    ({"op": "config", "zero_point": 128}, "CONFIG.zero_point must be in [-128, 127], not 128"),
    ({"op": "store", "colour": 1}, "STORE has no field 'colour'"),
    ({"op": "jump"}, "unknown opcode 'jump'"),
    ({"op": "load", "rows": 1.5}, "LOAD.rows must be an int, not 1.5"),
])
def test_encode_errors_name_the_field(kwargs, text):
    op = kwargs.pop("op")
    with pytest.raises(isa.IsaError) as info:
        isa.encode(op, **kwargs)
    assert text in str(info.value)


def test_illegal_opcode_rejected():
    with pytest.raises(isa.IsaError, match="illegal opcode 0"):
        isa.decode(0)
    with pytest.raises(isa.IsaError, match="illegal opcode 15"):
        isa.decode(0xF)


def test_program_image_round_trip():
    prog = [isa.encode("load", mem=0, rows=4, row_bytes=16, dram_addr=0x1000,
                       dram_stride=64, sram_addr=8, push_next=True),
            isa.encode("fence"), isa.encode("end")]
    image = isa.assemble(prog)
    assert len(image) == 3 * isa.INSN_BYTES
    back = isa.disassemble(image)
    assert [i.op for i in back] == [isa.Opcode.LOAD, isa.Opcode.FENCE, isa.Opcode.END]
    assert isa.assemble(back) == image
    with pytest.raises(isa.IsaError, match="not a multiple of 16"):
        isa.disassemble(image[:-1])


def _field_values(op, data):
    values = {}
    for name, width, _ in isa.FORMATS[op]:
        if name in isa._SIGNED:
            values[name] = data.draw(st.integers(-(1 << (width - 1)), (1 << (width - 1)) - 1))
        else:
            values[name] = data.draw(st.integers(0, (1 << width) - 1))
    return values


@given(data=st.data())
def test_encode_decode_and_rtl_layout_agree(data):
    """Every field decodes the same through decode() and through the Amaranth layout."""
    op = data.draw(st.sampled_from(list(isa.Opcode)))
    values = _field_values(op, data)
    flags = {f: data.draw(st.booleans()) for f in isa.FLAGS}
    word = isa.encode(op, **values, **flags)
    insn = isa.decode(word)
    assert dict(insn.fields) == values
    lay = isa.layout(op)
    assert lay.size == isa.INSN_BITS
    for name, value in values.items():
        field = lay[name]
        raw = (word >> field.offset) & ((1 << field.width) - 1)
        if field.shape.signed and raw >> (field.width - 1):
            raw -= 1 << field.width
        assert raw == value, name
    for f in isa.FLAGS:
        assert ((word >> lay[f].offset) & 1) == flags[f]
    assert (word >> lay["opcode"].offset) & 0xF == int(op)
