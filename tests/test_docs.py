"""Generated documents are current with their single Python definitions."""

from pathlib import Path

from llmchip.cli import main
from llmchip.sw import isa, regs
from llmchip.sw.docgen import write_docs

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_generated_docs_are_current():
    stale = write_docs(DOCS, check=True)
    assert not stale, f"run `llmchip docs` to regenerate: {stale}"


def test_docs_cover_every_opcode_and_register(tmp_path):
    assert main(["docs", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "isa.md").read_text()
    for op in isa.Opcode:
        assert f"## {op.name} (opcode {int(op)}" in text
    text = (tmp_path / "registers.md").read_text()
    for r in regs.REGISTERS:
        assert f"`{r.name}`" in text
    assert main(["docs", "--out", str(tmp_path), "--check"]) == 0
    (tmp_path / "isa.md").write_text("stale")
    assert main(["docs", "--out", str(tmp_path), "--check"]) == 1
