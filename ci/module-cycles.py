#!/usr/bin/env python3
"""Fails when the top-level modules of a crate import each other in a circle.

For each crate's `src/`, every top-level module (a file or a folder beside lib.rs/main.rs)
is a node, and `crate::other` in its code (comments and `#[cfg(test)] mod tests` left out)
an edge; the crate root may use every module. A strongly connected component of more than
one module is a circle: printed, and the exit status is 1.

    ci/module-cycles.py crates/*/src
"""
import os
import re
import sys


def modules(src):
    found = {}
    for root, _, files in os.walk(src):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), src)
            top = rel.split("/")[0].removesuffix(".rs")
            if name.endswith(".rs") and top not in ("lib", "main", "bin"):
                found.setdefault(top, []).append(os.path.join(root, name))
    return found


def graph(src):
    found = modules(src)
    edges = {m: set() for m in found}
    for module, paths in found.items():
        for path in paths:
            with open(path, encoding="utf-8") as f:
                code = f.read()
            code = re.sub(r"(?s)#\[cfg\(test\)\]\s*mod tests \{.*", "", code)
            code = re.sub(r"//[^\n]*", "", code)
            for used in re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", code):
                if used in edges and used != module:
                    edges[module].add(used)
    return edges


def circles(edges):
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


failed = False
for src in sys.argv[1:]:
    for circle in circles(graph(src)):
        failed = True
        print(f"{src}: modules import each other in a circle: {', '.join(circle)}")
sys.exit(1 if failed else 0)
