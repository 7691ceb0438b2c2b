#!/usr/bin/env python3
"""Module-cycle and file-size check for the workspace's crates.

Usage: python3 .ci/cycles.py tss-core/src keygen/src tss-node/src

For each crate source dir given:
- builds the graph of top-level modules (a file `x.rs` or a dir `x/` under
  src; submodules count as part of their top module) and, inside every
  module dir, the graph of its sibling submodules;
- a module A depends on B when a path `crate::B...` (also inside
  `use crate::{...}` groups), `super::B...` or `self::B...` appears in A's
  code (comments and string literals are skipped; `super`/`self` are resolved
  from the file's module path and any inline `mod name { ... }` around them;
  a name the parent module re-exports with `pub use child::...` counts as a
  use of that child);
- prints every cycle (the shortest cycle through each module of a strongly
  connected component, with one place each edge comes from);
- prints every non-test source file over 800 lines (test files: `tests.rs`
  and files under a `tests/` dir).

Exits 1 if anything was found, 0 otherwise. Python 3 stdlib only.
"""

import os
import re
import sys
from collections import deque

MAX_LINES = 800
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def tokens(text):
    """Yields (token, line) with comments, strings and char literals removed."""
    i, n, line = 0, len(text), 1
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    line += text[i] == "\n"
                    i += 1
        elif re.match(r'b?r#*"', text[i:i + 260]):
            m = re.match(r'b?r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            line += text.count("\n", i, j)
            i = j
        elif c == '"' or (c == "b" and text.startswith('b"', i)):
            i += 2 if c == "b" else 1
            while i < n and text[i] != '"':
                if text[i] == "\\":
                    i += 1
                line += text[i] == "\n" if i < n else 0
                i += 1
            i += 1
        elif c == "'" or (c == "b" and text.startswith("b'", i)):
            start = i + (2 if c == "b" else 1)
            m = re.match(r"(\\u\{[0-9a-fA-F]+\}|\\x[0-9a-fA-F]{2}|\\.|[^\\'])'", text[start:start + 12])
            if m:
                i = start + m.end()
            elif c == "b":
                yield "b", line
                i += 1
            else:
                i += 1  # a lifetime or label: drop the quote, keep the name
        elif IDENT.match(text, i):
            m = IDENT.match(text, i)
            yield m.group(0), line
            i = m.end()
        elif text.startswith("::", i):
            yield "::", line
            i += 2
        else:
            yield c, line
            i += 1


def parse_tree(toks, k):
    """Parses a path tail (`a::b`, `{a, b::{c}}`, `*`) at toks[k].

    Returns (list of segment lists, next index)."""
    if k >= len(toks):
        return [[]], k
    t = toks[k][0]
    if t == "{":
        out, k = [], k + 1
        while k < len(toks) and toks[k][0] != "}":
            paths, k = parse_tree(toks, k)
            out.extend(paths)
            while k < len(toks) and toks[k][0] not in (",", "}"):
                k += 1  # `as alias`
            if k < len(toks) and toks[k][0] == ",":
                k += 1
        return out or [[]], k + 1
    if IDENT.fullmatch(t):
        if k + 1 < len(toks) and toks[k + 1][0] == "::":
            rest, k2 = parse_tree(toks, k + 2)
            return [[t] + r for r in rest], k2
        return [[t]], k + 1
    return [[]], k


def module_path(src, path):
    """Module path of a source file, or None for crate roots and binaries."""
    rel = os.path.relpath(path, src).replace(os.sep, "/")
    parts = rel[:-3].split("/")
    if parts[0] == "bin" or rel in ("lib.rs", "main.rs"):
        return [] if rel == "lib.rs" else None
    if parts[-1] == "mod":
        parts = parts[:-1]
    return parts


def children(src, mod):
    """Names of the file/dir submodules of module `mod` (a segment list)."""
    d = os.path.join(src, *mod)
    if not os.path.isdir(d):
        return set()
    out = set()
    for e in os.listdir(d):
        p = os.path.join(d, e)
        if e.endswith(".rs") and e not in ("mod.rs", "lib.rs", "main.rs"):
            out.add(e[:-3])
        elif os.path.isdir(p) and not (not mod and e == "bin"):
            if any(f.endswith(".rs") for _, _, fs in os.walk(p) for f in fs):
                out.add(e)
    return out


def references(toks, mod):
    """Yields (absolute path, line, is_reexport_of_child) from a file's tokens."""
    stack = []  # (name, brace depth at which the inline module closes)
    depth = 0
    k = 0
    while k < len(toks):
        t, line = toks[k]
        if t == "{":
            depth += 1
        elif t == "}":
            depth -= 1
            while stack and stack[-1][1] > depth:
                stack.pop()
        elif t == "mod" and k + 2 < len(toks) and toks[k + 2][0] == "{" and IDENT.fullmatch(toks[k + 1][0]):
            stack.append((toks[k + 1][0], depth + 1))
        here = mod + [s for s, _ in stack]
        prev = toks[k - 1][0] if k else ""
        if t in ("crate", "super", "self") and k + 1 < len(toks) and toks[k + 1][0] == "::" and prev != "::":
            base, j = ([], k) if t == "crate" else (list(here), k)
            while toks[j][0] in ("super", "self") and j + 1 < len(toks) and toks[j + 1][0] == "::":
                if toks[j][0] == "super":
                    base = base[:-1]
                j += 2
            if t == "crate":
                j = k + 2
            paths, _ = parse_tree(toks, j)
            for p in paths:
                yield base + p, line
        k += 1


def reexports(toks, mod, kids):
    """Maps names that module `mod` re-exports from a child to that child."""
    out = {}
    k = 0
    while k < len(toks):
        if toks[k][0] == "use" and k and toks[k - 1][0] in ("pub", ")"):
            j = k + 1
            base = list(mod)
            if toks[j][0] == "crate" and toks[j + 1][0] == "::":
                base, j = [], j + 2
            elif toks[j][0] == "self" and toks[j + 1][0] == "::":
                j += 2
            paths, _ = parse_tree(toks, j)
            # `as` aliases: collect them from the statement's tokens.
            stmt = []
            e = j
            while e < len(toks) and toks[e][0] != ";":
                stmt.append(toks[e][0])
                e += 1
            aliases = {stmt[i - 1]: stmt[i + 1] for i in range(1, len(stmt) - 1) if stmt[i] == "as"}
            for p in paths:
                full = base + p
                if len(full) > len(mod) and full[:len(mod)] == mod and full[len(mod)] in kids and len(full) > len(mod) + 1:
                    name = full[-1]
                    out[aliases.get(name, name)] = full[len(mod)]
        k += 1
    return out


def shortest_cycle(graph, start, members):
    prev = {start: None}
    q = deque([start])
    while q:
        u = q.popleft()
        for v in sorted(graph.get(u, ())):
            if v not in members:
                continue
            if v == start:
                path = [u]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return list(reversed(path)) + [start]
            if v not in prev:
                prev[v] = u
                q.append(v)
    return None


def sccs(graph):
    index, low, on, st, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        st.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = st.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            out.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def check(src):
    findings = 0
    src = src.rstrip("/")
    files = []
    for root, dirs, fs in os.walk(src):
        dirs.sort()
        for f in sorted(fs):
            if f.endswith(".rs"):
                files.append(os.path.join(root, f))

    parsed = {}
    for path in files:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        rel = os.path.relpath(path, src).replace(os.sep, "/")
        is_test = os.path.basename(path) == "tests.rs" or "tests" in rel.split("/")[:-1]
        nlines = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
        if not is_test and nlines > MAX_LINES:
            print(f"size: {path}: {nlines} lines (over {MAX_LINES})")
            findings += 1
        mod = module_path(src, path)
        if mod is not None:
            parsed[path] = (mod, list(tokens(text)))

    # Names each module re-exports from one of its children.
    exported = {}
    for path, (mod, toks) in parsed.items():
        kids = children(src, mod)
        if kids:
            exported.setdefault(tuple(mod), {}).update(reexports(toks, mod, kids))

    # graphs[module dir as tuple][from child][to child] = first (file, line)
    graphs = {}
    for path, (mod, toks) in parsed.items():
        for ref, line in references(toks, mod):
            # `crate::Name` / `super::Name` where the parent re-exports Name.
            for cut in range(len(ref), -1, -1):
                names = exported.get(tuple(ref[:cut]))
                if names and len(ref) > cut and ref[cut] in names:
                    ref = ref[:cut] + [names[ref[cut]]] + ref[cut:]
                    break
            d = 0
            while d < min(len(mod), len(ref)) and mod[d] == ref[d]:
                d += 1
            if d >= len(mod) or d >= len(ref):
                continue
            parent = tuple(mod[:d])
            kids = children(src, list(parent))
            a, b = mod[d], ref[d]
            if a in kids and b in kids and a != b:
                edges = graphs.setdefault(parent, {}).setdefault(a, {})
                edges.setdefault(b, (os.path.relpath(path, src), line))

    for parent in sorted(graphs):
        graph = graphs[parent]
        where = f"{src}/{'/'.join(parent)}" if parent else src
        level = "sibling modules of " + "::".join(parent) if parent else "top-level modules"
        for comp in sccs(graph):
            if len(comp) < 2:
                continue
            seen = set()
            for start in sorted(comp):
                cyc = shortest_cycle(graph, start, comp)
                if not cyc:
                    continue
                body = cyc[:-1]
                r = body.index(min(body))
                key = tuple(body[r:] + body[:r])
                if key in seen:
                    continue
                seen.add(key)
                findings += 1
                steps = []
                for u, v in zip(cyc, cyc[1:]):
                    f, ln = graph[u][v]
                    steps.append(f"{u} -> {v} ({f}:{ln})")
                print(f"cycle in {where} ({level}): " + " -> ".join(cyc))
                for s in steps:
                    print(f"    {s}")
    return findings


def main(argv):
    if not argv:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    total = 0
    for src in argv:
        n = check(src)
        if n == 0:
            print(f"ok: {src}: no module cycles, no file over {MAX_LINES} lines")
        total += n
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
