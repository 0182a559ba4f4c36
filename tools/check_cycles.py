#!/usr/bin/env python3
"""Import cycles between the source files of each crate in the workspace.

Per crate (a Cargo.toml next to src/; kmod/ is skipped): the graph "file A
uses a name from file B", from `use crate::/super::/self::…` (grouped uses
too) and paths in code (`crate::foo::bar(…)`, `super::x::Y`, `child::f()`).
Modules map to files as rustc does it (`mod foo;` → foo.rs, foo/mod.rs or
`#[path]`); a path resolves to its longest prefix that is a module. Edges to
the crate root and to a file's ancestor modules do not count (facades that
re-export; `mod` is structure, not a dependency). Comments, literals and
`#[cfg(test)] mod …` blocks are left out. Prints each cycle (a strongly
connected component of more than one file) with the names that make its
edges and exits 1; else prints "no import cycles in N files".
"""

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP_DIRS = {"target", "kmod", "node_modules"}

LEX = re.compile(r"""//[^\n]*|/\*|(?<!\w)b?r(\#*)"|(?<!\w)b?"(?:\\.|[^"\\])*"|(?<!\w)b?'(?:\\'|\\[^']*|[^'\\\n])'""")
TEST_MOD = re.compile(r"#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*([{;])")
INLINE_MOD = re.compile(r"\bmod\s+(\w+)\s*\{")
MOD_DECL = re.compile(r"((?:#\[[^\]]*\]\s*)*)(?:pub(?:\([^)]*\))?\s+)?\bmod\s+(\w+)\s*;")
PATH_ATTR = re.compile(r"#\[path\s*=([^\]]*)\]")
USE = re.compile(r"\buse\s+([^;]*);")
CODE_PATH = re.compile(r"(?<![\w:$])\w+(?:\s*::\s*\w+)+")


def blank(text):
    """Same length and line breaks, nothing else."""
    return re.sub(r"[^\n]", " ", text)


def strip(src):
    """Source with comments and string/char literals blanked out."""
    out, pos = [], 0
    while m := LEX.search(src, pos):
        end = m.end()
        if m.group() == "/*":  # block comments nest
            depth = 1
            while depth and end < len(src):
                step = src[end:end + 2]
                depth += (step == "/*") - (step == "*/")
                end += 2 if step in ("/*", "*/") else 1
        elif m.group(1) is not None:  # raw string: up to `"` and as many #
            close = src.find('"' + m.group(1), end)
            end = len(src) if close < 0 else close + 1 + len(m.group(1))
        out += [src[pos:m.start()], blank(src[m.start():end])]
        pos = end
    return "".join(out) + src[pos:]


def block_end(code, brace):
    """Index just past the `}` matching the `{` at `brace`."""
    depth = 0
    for i in range(brace, len(code)):
        depth += {"{": 1, "}": -1}.get(code[i], 0)
        if depth == 0:
            return i + 1
    return len(code)


def drop_tests(code):
    while m := TEST_MOD.search(code):
        end = m.end() if m.group(1) == ";" else block_end(code, m.end() - 1)
        code = code[:m.start()] + blank(code[m.start():end]) + code[end:]
    return code


def inline_scope(spans, pos):
    """Names of the inline `mod x { … }` blocks around `pos`, outermost first."""
    return tuple(name for start, end, name in spans if start < pos < end)


def load_tree(root_file):
    """Walks `mod` declarations from a crate root: {module path: file} and
    {file: (module path, cleaned code, inline module spans)}."""
    modules, files = {}, {}

    def walk(path, modpath, owns_dir):
        raw = path.read_text(encoding="utf-8", errors="replace")
        code = drop_tests(strip(raw))
        spans = [(m.end() - 1, block_end(code, m.end() - 1), m.group(1)) for m in INLINE_MOD.finditer(code)]
        modules[modpath] = path
        files[path] = (modpath, code, spans)
        for _, _, name in spans:
            modules.setdefault(modpath + (name,), path)
        base = path.parent if owns_dir else path.parent / path.stem
        for m in MOD_DECL.finditer(code):
            scope, name = inline_scope(spans, m.start()), m.group(2)
            attr = PATH_ATTR.search(m.group(1))
            if attr:
                literal = raw[m.start(1) + attr.start(1):m.start(1) + attr.end(1)]
                child, child_owns = path.parent / re.sub(r'^[br#]*"|"#*$', "", literal.strip()), True
            else:
                child = base.joinpath(*scope, name + ".rs")
                child_owns = not child.exists()
                if child_owns:
                    child = base.joinpath(*scope, name, "mod.rs")
            if child.exists() and child not in files:
                walk(child, modpath + scope + (name,), child_owns or child.name == "mod.rs")

    walk(root_file, (), True)
    return modules, files


def use_paths(toks, i, prefix):
    """Expands the use tree at toks[i] (`a::{b, c::{d as e}}`) into paths."""
    path = list(prefix)
    while i < len(toks):
        t = toks[i]
        if t == "{":
            out, i = [], i + 1
            while i < len(toks) and toks[i] != "}":
                sub, i = use_paths(toks, i, path)
                out += sub
                i += i < len(toks) and toks[i] == ","
            return out, i + 1
        if t in (",", "}"):
            break
        if t == "as":
            i += 2
            continue
        if t not in ("::", "*") and not (t == "self" and path):
            path.append(t)
        i += 1
    return [path], i


def resolve(path, cur, modules):
    """The file `path` (segments) written in module `cur` refers to, if ours."""
    head = path[0]
    if head == "crate":
        base, rest = (), path[1:]
    elif head in ("self", "super"):
        base, rest = cur, list(path)
        while rest and rest[0] in ("self", "super"):
            base = base[:-1] if rest.pop(0) == "super" else base
    elif cur + (head,) in modules:  # a child module named without `self::`
        base, rest = cur, path
    else:
        return None
    full = base + tuple(rest)
    for n in range(len(full), -1, -1):
        if full[:n] in modules:
            return modules[full[:n]]
    return None


def references(code):
    """(position, path segments, text) of every module path in the code."""
    for m in USE.finditer(code):
        toks = re.findall(r"::|[{},*]|\w+", m.group(1))
        if toks and toks[0] != "::":
            for path in use_paths(toks, 0, [])[0]:
                yield m.start(), path, "::".join(path)
    code = USE.sub(lambda m: blank(m.group()), code)
    for m in CODE_PATH.finditer(code):
        path = re.split(r"\s*::\s*", m.group())
        yield m.start(), path, "::".join(path)


def crate_graph(crate):
    """{file: {file it uses: [(name, line), …]}} for one crate."""
    src = crate / "src"
    roots = [src / "lib.rs", src / "main.rs", *sorted((src / "bin").glob("*.rs")),
             *sorted((src / "bin").glob("*/main.rs"))]
    graph = {}
    for root_file in filter(Path.exists, roots):
        modules, files = load_tree(root_file)
        for path, (modpath, code, spans) in files.items():
            edges = graph.setdefault(path, {})
            facades = {modules[modpath[:k]] for k in range(len(modpath))} | {path}
            for pos, segments, text in references(code):
                target = resolve(segments, modpath + inline_scope(spans, pos), modules)
                if target is not None and target not in facades:
                    line = code.count("\n", 0, pos) + 1
                    names = edges.setdefault(target, [])
                    if all(text != n for n, _ in names):
                        names.append((text, line))
    return graph


def tarjan(graph):
    """Strongly connected components of `graph`."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def crates():
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        if "Cargo.toml" in filenames and os.path.isdir(os.path.join(dirpath, "src")):
            yield Path(dirpath)


def rel(path):
    return path.relative_to(ROOT).as_posix()


def main():
    sys.setrecursionlimit(10000)
    cycles, nfiles = 0, 0
    for crate in crates():
        graph = crate_graph(crate)
        nfiles += len(graph)
        for component in tarjan(graph):
            if len(component) < 2:
                continue
            cycles += 1
            print(f"import cycle in {rel(crate)}: {', '.join(rel(f) for f in component)}")
            for f in component:
                for target, names in sorted(graph[f].items()):
                    if target in component:
                        uses = ", ".join(f"{name} (line {line})" for name, line in names)
                        print(f"  {rel(f)} -> {rel(target)}: {uses}")
    if cycles:
        print(f"{cycles} import cycle(s); move what the files share into a module below them")
        return 1
    print(f"no import cycles in {nfiles} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
