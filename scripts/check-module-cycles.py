#!/usr/bin/env python3
"""Fails when the modules of a crate depend on each other in a cycle.

For every crate of the workspace (a directory with `Cargo.toml` and `src/`), reads the
`crate::...`, `super::...` and `self::...` paths of each source file (comments excluded) and
resolves each to the deepest module it names. A path from module `a::x` to module `a::y::z`
is an edge between the siblings `x -> y` under their common parent `a`: the layering that
matters is between siblings (between the top-level modules of a crate, and between the
files of one module directory). A module's use of its own ancestors or descendants is not an
edge (a parent declares and re-exports its children; a child may use its parent's items).

Usage: scripts/check-module-cycles.py [CRATE_DIR ...]   (default: every crate of the workspace)
Prints each cycle with one `file:line` per edge, and exits 1 if there is any.
"""

import re
import sys
from pathlib import Path

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
PATH_START = re.compile(r"\b(crate|super|self)::")


def module_of(src: Path, file: Path):
    """The module path of a source file, as a tuple of names; None for non-library roots."""
    rel = file.relative_to(src)
    parts = list(rel.parts)
    if parts[0] == "bin" or rel.name == "main.rs" and len(parts) == 1:
        return None
    if parts[-1] in ("lib.rs", "mod.rs"):
        parts = parts[:-1]
    else:
        parts[-1] = parts[-1][:-3]
    return tuple(parts)


def strip_comments(line: str) -> str:
    # Good enough for this codebase: `//` inside string literals is rare in `use` paths.
    at = line.find("//")
    return line if at < 0 else line[:at]


def read_group(text: str, at: int):
    """The text of a `{...}` group starting at `at`, and the index after it."""
    depth = 0
    for i in range(at, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[at + 1 : i], i + 1
    return text[at + 1 :], len(text)


def split_top(group: str):
    items, depth, start = [], 0, 0
    for i, c in enumerate(group):
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == "," and depth == 0:
            items.append(group[start:i])
            start = i + 1
    items.append(group[start:])
    return [i.strip() for i in items if i.strip()]


def expand(rest: str):
    """The segment lists a path text names: `a::b::X` or `a::{b::X, c}` or `{a, b}`."""
    rest = rest.strip()
    if rest.startswith("{"):
        group, _ = read_group(rest, 0)
        out = []
        for item in split_top(group):
            out.extend(expand(item))
        return out
    segments = []
    while True:
        m = re.match(IDENT, rest)
        if not m:
            break
        segments.append(m.group(0))
        rest = rest[m.end() :]
        if rest.startswith("::"):
            rest = rest[2:]
            if rest.startswith("{"):
                group, _ = read_group(rest, 0)
                return [segments + tail for item in split_top(group) for tail in expand(item)]
            continue
        break
    return [segments]


def references(text: str):
    """(line number, base, segments) for every module path in a file."""
    lines = [strip_comments(l) for l in text.split("\n")]
    code = "\n".join(lines)
    line_starts = [0]
    for l in lines:
        line_starts.append(line_starts[-1] + len(l) + 1)
    for m in PATH_START.finditer(code):
        base = [m.group(1)]
        at = m.end()
        while code.startswith("super::", at):
            base.append("super")
            at += len("super::")
        rest = code[at : at + 4000]
        line = next(i for i, s in enumerate(line_starts) if s > m.start())
        for segments in expand(rest):
            yield line, base, segments


def resolve(modules, current, base, segments):
    if base[0] == "crate":
        start = ()
    elif base[0] == "self":
        start = current
    else:
        up = len(base)
        start = current[: max(len(current) - up, 0)]
    target = start
    for s in segments:
        if target + (s,) in modules:
            target = target + (s,)
        else:
            break
    return target


def cycles_of(graph):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def check(crate: Path):
    src = crate / "src"
    files = {}
    for f in sorted(src.rglob("*.rs")):
        m = module_of(src, f)
        if m is not None:
            files[m] = f
    modules = set(files)
    # (parent, from child, to child) -> first place seen
    edges = {}
    for module, file in files.items():
        text = file.read_text()
        for line, base, segments in references(text):
            target = resolve(modules, module, base, segments)
            common = 0
            while (
                common < min(len(module), len(target)) and module[common] == target[common]
            ):
                common += 1
            if common == len(module) or common == len(target):
                continue  # an ancestor or a descendant
            parent = module[:common]
            key = (parent, module[common], target[common])
            edges.setdefault(key, f"{file}:{line}")
    by_parent = {}
    for (parent, a, b) in edges:
        by_parent.setdefault(parent, {}).setdefault(a, set()).add(b)
    found = 0
    for parent, graph in sorted(by_parent.items()):
        for component in cycles_of(graph):
            found += 1
            where = "::".join(("crate",) + parent)
            print(f"{crate.name}: cycle among {where}::{{{', '.join(component)}}}")
            members = set(component)
            for (p, a, b), place in sorted(edges.items()):
                if p == parent and a in members and b in members:
                    print(f"  {a} -> {b}  ({place})")
    return found


def main():
    root = Path(__file__).resolve().parent.parent
    crates = [Path(a) for a in sys.argv[1:]] or sorted(
        p.parent for p in root.glob("*/Cargo.toml") if (p.parent / "src").is_dir()
    )
    found = sum(check(c) for c in crates)
    if found:
        print(f"{found} module cycle(s)")
        sys.exit(1)
    print(f"no module cycles in {len(crates)} crates")


if __name__ == "__main__":
    main()
