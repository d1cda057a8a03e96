"""An import-linter contract type the library lacks: no import cycle among single modules.

import-linter's own ``acyclic_siblings`` compares packages, so it would also refuse a
notifier package that imports one pure module of the workflow package while the workflow's
transition event imports the notifier, which is the direction this project wants. This
contract looks at modules only: a cycle is a module that, through the modules it imports
(at the top or inside a function), ends up importing itself. Loaded by ``lint-imports``
through ``contract_types`` in pyproject.toml.
"""

from __future__ import annotations

from importlinter import Contract, ContractCheck, fields, output


class AcyclicModulesContract(Contract):
    type_name = "acyclic_modules"

    # Cycles are looked for among these packages' modules (imports of anything else ignored).
    packages = fields.ListField(subfield=fields.StringField())

    def check(self, graph, verbose: bool) -> ContractCheck:
        roots = tuple(self.packages)  # type: ignore[arg-type]
        ours = {m for m in graph.modules if m.split(".")[0] in roots}
        edges = {
            m: sorted(x for x in graph.find_modules_directly_imported_by(m) if x in ours)
            for m in ours
        }
        found = []
        for group in _tangles(edges):
            # One cycle through the group's first module shows the way round; the group
            # lists every module caught in it.
            first = group[0]
            after = next(x for x in edges[first] if x in group)
            chain = [first, *graph.find_shortest_chain(importer=after, imported=first)]
            links = []
            for a, b in zip(chain, chain[1:], strict=False):
                lines = [d["line_number"] for d in graph.get_import_details(importer=a, imported=b)]
                links.append(f"{a} -> {b} (l.{', '.join(map(str, lines))})")
            found.append({"modules": group, "links": links})
        return ContractCheck(kept=not found, metadata={"cycles": found})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for cycle in check.metadata["cycles"]:
            output.print_error(
                f"{len(cycle['modules'])} modules import each other: "
                + ", ".join(cycle["modules"]),
                bold=False,
            )
            output.print_error("For example:", bold=False)
            for link in cycle["links"]:
                output.print_error(f"- {link}", bold=False)
            output.new_line()


def _tangles(edges: dict[str, list[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, without
    recursion), each sorted, in order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(edges[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        out.append(sorted(group))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(edges[child])))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return sorted(out)
