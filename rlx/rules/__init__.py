"""Rule files: parse and check them into a ``RuleSet``. ``rlx.rules.load(paths)``.

A rule set is a value: its fused ops live in the set (``RuleSet.ops``) and are visible only
where it is active (``with rule_set.active():``, which ``rlx.compile`` does), so loading rules
never changes what another compile sees. The fused ops the shipped rule files declare are the
standard library: every compile sees them, whatever rules it uses."""
from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from rlx.ir.registry import REGISTRY, OpDef
from rlx.rules.ast import FusedDecl, RegionsDecl, Rule, RuleFile, Span
from rlx.rules.check import Checker
from rlx.rules.errors import RuleError
from rlx.rules.fused import opdef_for
from rlx.rules.parse import parse_text

SHIPPED = Path(__file__).resolve().parents[2] / "rules"
# All the rule files one load reads, includes too, hold at most 512 KiB (the shipped ones: 15 KiB;
# parsing runs at about 50 KiB/s, so this bounds a load to seconds). Each is a regular file.
MAX_LOAD_BYTES = 512 << 10


@dataclass
class RuleSet:
    """Everything loaded from a set of rule files, in file order."""
    rules: list[Rule] = field(default_factory=list)
    fused: list[FusedDecl] = field(default_factory=list)
    regions: list[RegionsDecl] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    commutative: set[str] = field(default_factory=set)
    ops: dict[str, OpDef] = field(default_factory=dict)   # its fused ops, by name

    def active(self) -> AbstractContextManager[None]:
        """Its fused ops visible to the registry in this context (and thread)."""
        return REGISTRY.scope(self.ops)

    def rule(self, name: str) -> Rule:
        for r in self.rules:
            if r.name == name:
                return r
        raise KeyError(name)

    def sets(self) -> list[str]:
        return sorted({r.ruleset for r in self.rules} | {r.ruleset for r in self.regions})

    def __len__(self) -> int:
        return len(self.rules)


def _expand(paths: Iterable[str | Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(sorted(p.rglob("*.rlx")))
        elif p.exists():
            out.append(p)
        else:
            raise RuleError(Span(str(p), 0, 0), "no such rule file or directory")
    return out


def _read(path: Path, budget: int) -> str:
    """A rule file's text. Only a regular file is read (a device or a pipe could block or never
    end), and at most ``budget`` bytes of it; it must be UTF-8 (RuleError at the first bad byte)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block the open
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        data = f.read(budget + 1)
    if len(data) > budget:
        raise ValueError(f"the rule files of this load would pass {MAX_LOAD_BYTES} bytes (MAX_LOAD_BYTES)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        before = data[:e.start].decode("utf-8")
        line, col = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        raise RuleError(Span(str(path), line, col),
                        f"not UTF-8: byte 0x{data[e.start]:02x} at offset {e.start}",
                        data.decode("utf-8", "replace")) from None


def load(paths: Iterable[str | Path] | str | Path | None = None) -> RuleSet:
    """Parse and check rule files (directories are searched for ``*.rlx``; default: the
    shipped rules), register their fused ops, and return the rules.

    Errors are RuleError with ``path:line:col``, the line and a caret."""
    if paths is None:
        paths = [SHIPPED]
    elif isinstance(paths, (str, Path)):
        paths = [paths]
    source: dict[str, str] = {}
    files: list[RuleFile] = []
    seen: set[Path] = set()
    used = 0  # bytes read
    # Depth-first: a file's includes come before it, as in C, so what they declare is known.
    stack: list[tuple[Path, Span | None, RuleFile | None]] = [(p, None, None) for p in reversed(_expand(paths))]
    while stack:
        path, where, parsed = stack.pop()
        if parsed is not None:
            files.append(parsed)
            continue
        try:
            real = path.resolve()
            if real in seen:
                continue
            seen.add(real)
            text = _read(path, MAX_LOAD_BYTES - used)
            used += len(text.encode())
        except (OSError, RuntimeError, ValueError) as e:  # RuntimeError: a symlink loop; ValueError: a NUL
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            if where is not None:
                raise RuleError(where, f"cannot include {str(path)!r}: {why}",
                                source.get(where.path)) from None
            raise RuleError(Span(str(path), 0, 0), f"cannot read: {why}") from None
        source[str(path)] = text
        rf = parse_text(text, str(path))
        stack.append((path, where, rf))
        stack.extend((path.parent / inc, span, None) for inc, span in reversed(rf.includes))
    return _check(files, source)


def _check(files: list[RuleFile], source: dict[str, str]) -> RuleSet:
    out = RuleSet(files=[f.path for f in files])
    with out.active():  # later declarations and rules see the earlier ones
        _check_into(out, files, Checker(source))
    return out


def _check_into(out: RuleSet, files: list[RuleFile], checker: Checker) -> None:
    declared: dict[str, FusedDecl] = {}
    for rf in files:
        for decl in rf.fused:
            if decl.name in declared:
                raise checker.error(decl.span, f"fused op {decl.name!r} is already declared at {declared[decl.name].span}")
            checker.check_fused(decl)
            declared[decl.name] = decl
            out.fused.append(decl)
            out.ops[decl.name] = opdef_for(decl)
    names: dict[str, Rule] = {}
    for rf in files:
        for rule in rf.rules:
            if rule.name in names:
                raise checker.error(rule.span, f"duplicate rule name {rule.name!r} (first at {names[rule.name].span})")
            checker.check_rule(rule)
            names[rule.name] = rule
            out.rules.append(rule)
        out.regions.extend(rf.regions)
        for name, span in rf.commutative:
            op = REGISTRY.get(name) if name in REGISTRY else None
            if op is None or len(op.inputs) != 2 or op.variadic:
                raise checker.error(span, f"commutative: {name!r} is not a binary op")
            out.commutative.add(name)


_LIBRARY: dict[str, OpDef] = {}
_LIBRARY_STATE = {"built": False, "building": False}
_LIBRARY_LOCK = threading.RLock()


def standard_library() -> dict[str, OpDef]:
    """The fused ops declared by the shipped rule files, by name (parsed once, on first use)."""
    if _LIBRARY_STATE["built"]:
        return _LIBRARY
    with _LIBRARY_LOCK:
        if not (_LIBRARY_STATE["built"] or _LIBRARY_STATE["building"]):
            _LIBRARY_STATE["building"] = True
            try:
                for path in _expand([SHIPPED]):
                    for decl in parse_text(path.read_text(), str(path)).fused:
                        _LIBRARY[decl.name] = opdef_for(decl)
                _LIBRARY_STATE["built"] = True
            finally:
                _LIBRARY_STATE["building"] = False
    return _LIBRARY


REGISTRY.library = standard_library


__all__ = ["load", "RuleSet", "RuleError", "parse_text", "SHIPPED", "standard_library", "MAX_LOAD_BYTES"]
