"""Does a line's adapter module offer what ``fairchem_categorical.adapters`` says a role needs?

Checked two ways with one comparison: from the source (``ast``; any environment, both
lines) and from the imported module (``inspect``; only in the line's own environment).
A function satisfies a protocol method when it takes the method's parameters, by the same
names, in the same order and of the same kind, with a default wherever the method has one;
its further parameters must have defaults (the app never passes them unless ``Line`` says
the line has them).
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from pathlib import Path

from fairchem_categorical.adapters import ROLES

PACKAGE = Path(__file__).resolve().parent.parent / "fairchem_categorical"
_EMPTY = inspect.Parameter.empty


def members(protocol: type) -> dict[str, inspect.Signature]:
    """The protocol's methods and their signatures, without ``self``."""
    out = {}
    for name, fn in vars(protocol).items():
        if callable(fn) and not name.startswith("_"):
            sig = inspect.signature(fn)
            out[name] = sig.replace(parameters=list(sig.parameters.values())[1:])
    return out


def problems(expected: inspect.Signature, actual: inspect.Signature, where: str) -> list[str]:
    """Why ``actual`` cannot stand where ``expected`` is called (empty: it can)."""
    found = list(actual.parameters.values())
    if any(p.kind is p.VAR_POSITIONAL for p in found) and any(
            p.kind is p.VAR_KEYWORD for p in found):
        return []  # (*args, **kwargs) takes anything
    out = []
    for i, want in enumerate(expected.parameters.values()):
        have = actual.parameters.get(want.name)
        if have is None:
            out.append(f"{where}: no parameter {want.name!r}")
            continue
        if want.kind in (want.POSITIONAL_ONLY, want.POSITIONAL_OR_KEYWORD) and (
                found.index(have) != i or have.kind is not want.POSITIONAL_OR_KEYWORD):
            out.append(f"{where}: {want.name!r} is not positional parameter {i + 1}")
        if want.default is not _EMPTY and have.default is _EMPTY:
            out.append(f"{where}: {want.name!r} has no default")
    extra = [p for p in found if p.name not in expected.parameters
             and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.default is _EMPTY]
    out += [f"{where}: extra parameter {p.name!r} without a default" for p in extra]
    return out


def check(role: str, signature_of: Callable[[str], inspect.Signature | None], line: str
          ) -> list[str]:
    """Every problem of ``line``'s ``role`` module; ``signature_of(name)``: None if absent."""
    out = []
    for name, expected in members(ROLES[role]).items():
        actual = signature_of(name)
        where = f"{line}.{role}.{name}"
        out += [f"{where}: missing"] if actual is None else problems(expected, actual, where)
    return out


# -- from the source ---------------------------------------------------------------------
def _signature(fn: ast.FunctionDef) -> inspect.Signature:
    a, P = fn.args, inspect.Parameter
    positional = [*a.posonlyargs, *a.args]
    defaults = [_EMPTY] * (len(positional) - len(a.defaults)) + list(a.defaults)
    params = [P(arg.arg, P.POSITIONAL_ONLY if arg in a.posonlyargs else P.POSITIONAL_OR_KEYWORD,
                default=d) for arg, d in zip(positional, defaults, strict=True)]
    if a.vararg:
        params.append(P(a.vararg.arg, P.VAR_POSITIONAL))
    params += [P(arg.arg, P.KEYWORD_ONLY, default=_EMPTY if d is None else d)
               for arg, d in zip(a.kwonlyargs, a.kw_defaults, strict=True)]
    if a.kwarg:
        params.append(P(a.kwarg.arg, P.VAR_KEYWORD))
    return inspect.Signature(params)


def source_signature(module: str, name: str, seen: int = 0) -> inspect.Signature | None:
    """``name``'s signature in ``fairchem_categorical.<module>``'s source, following the
    package's own ``from ... import name``; None if the module neither defines nor
    imports it."""
    path = PACKAGE.joinpath(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    if not path.is_file() or seen > 5:
        return None
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return _signature(node)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "fairchem_categorical.") and any(
                (alias.asname or alias.name) == name for alias in node.names):
            alias = next(a for a in node.names if (a.asname or a.name) == name)
            return source_signature(node.module.removeprefix("fairchem_categorical."),
                                    alias.name, seen + 1)
    return None
