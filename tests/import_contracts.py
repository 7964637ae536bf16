"""Import-linter contract types of our own: single_file_forbidden for single-file top-level
modules (idcf_api.py, textio.py), which grimp cannot graph, checked by reading the module's own
import statements (every one, inside functions and TYPE_CHECKING blocks too); and
acyclic_with_type_checking, acyclic_siblings over a graph that keeps the imports made only for
type checking."""

from __future__ import annotations

import ast
import importlib.util

import grimp
from grimp import ImportGraph
from importlinter.application import output
from importlinter.contracts.acyclic_siblings import AcyclicSiblingsContract
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


class AcyclicWithTypeCheckingContract(AcyclicSiblingsContract):
    """acyclic_siblings, counting the imports inside `if TYPE_CHECKING:` too (the other
    contracts leave them out: exclude_type_checking_imports): a cycle that only type hints
    close is still two modules that cannot be understood one without the other."""

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        roots = sorted({expression.expression.split(".")[0]
                        for expression in self.ancestors})  # type: ignore[attr-defined]
        return super().check(grimp.build_graph(*roots, exclude_type_checking_imports=False),
                             verbose)
