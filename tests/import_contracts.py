"""An import-linter contract type for single-file top-level modules (idcf_api.py): grimp only
builds graphs of packages, so these are checked by reading the module's own import statements
(every one, inside functions and TYPE_CHECKING blocks too)."""

from __future__ import annotations

import ast
import importlib.util

from grimp import ImportGraph
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


def imported_names(path: str) -> list[tuple[str, int]]:
    """Every absolute module a Python file imports, with its line number."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node.lineno))
    return found


def _is_within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


class ModuleForbiddenContract(Contract):
    """source_modules (single files) must not import forbidden_modules."""

    source_modules = fields.ListField(subfield=fields.StringField())
    forbidden_modules = fields.ListField(subfield=fields.StringField())

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        broken = []
        for source in self.source_modules:  # type: ignore[attr-defined]
            spec = importlib.util.find_spec(source)
            if spec is None or spec.origin is None:
                broken.append(f"{source}: module not found")
                continue
            for name, line in imported_names(spec.origin):
                if any(_is_within(name, f) for f in self.forbidden_modules):  # type: ignore
                    broken.append(f"{source} imports {name} (l.{line})")
        return ContractCheck(kept=not broken, metadata={"broken": broken})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for line in check.metadata["broken"]:
            output.print_error(line, bold=False)
            output.new_line()
