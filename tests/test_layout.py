"""The package's import graph, as the architecture says it is: serving/ below the eval and the
merge search, which never reach into each other's modules; core/ below everything; only
commands/ (and the demo, which runs every stage) above the stages."""

from __future__ import annotations

import ast
from pathlib import Path

import lf_wrap

PACKAGE = Path(lf_wrap.__file__).parent


def _imports() -> dict[str, set[str]]:
    """module -> the lf_wrap modules it imports (at any depth of the file, lazy imports included)."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lf_wrap"):
                found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("lf_wrap")}
        graph[module] = found
    return graph


def _offending(graph, source: str, forbidden) -> list[str]:
    return sorted(f"{m} imports {i}" for m, found in graph.items() if m.startswith(source + ".") or m == source
                  for i in found if forbidden(i))


def test_the_search_uses_only_the_evals_public_names_and_the_eval_never_imports_the_search():
    graph = _imports()
    public = set(__import__("lf_wrap.evaluation", fromlist=["__all__"]).__all__)
    into_eval = _offending(graph, "lf_wrap.search", lambda i: i.startswith("lf_wrap.evaluation.")
                           and i.removeprefix("lf_wrap.evaluation.") not in public)
    assert into_eval == []
    assert _offending(graph, "lf_wrap.evaluation", lambda i: i.startswith("lf_wrap.search")) == []


def test_serving_lies_below_the_eval_and_the_search():
    graph = _imports()
    upward = ("lf_wrap.evaluation", "lf_wrap.search", "lf_wrap.commands", "lf_wrap.demo")
    assert _offending(graph, "lf_wrap.serving", lambda i: i.startswith(upward)) == []


def test_core_imports_no_stage_and_only_the_command_layer_imports_commands():
    graph = _imports()
    stages = ("lf_wrap.data", "lf_wrap.train", "lf_wrap.merge", "lf_wrap.evaluation", "lf_wrap.search",
              "lf_wrap.serving", "lf_wrap.commands", "lf_wrap.demo", "lf_wrap.tasks", "lf_wrap.scoring")
    assert _offending(graph, "lf_wrap.core", lambda i: i.startswith(stages)) == []
    outside = [m for m in graph if not m.startswith(("lf_wrap.commands", "lf_wrap.cli"))]
    assert [f"{m} imports {i}" for m in outside for i in graph[m] if i.startswith("lf_wrap.commands")] == []
