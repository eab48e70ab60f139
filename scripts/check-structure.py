#!/usr/bin/env python3
"""The house rules the compiler does not check, over crates/*/src:

- no module over 400 lines and no function over 60 lines (test modules and
  `*_tests.rs` / `*_props.rs` / `tests.rs` files apart);
- no import circle between the modules of one crate: a module that uses an
  item of another (through `use crate::…`, `use super::…` or a path in the
  code) depends on it; a parent that declares a child module does not, and
  a re-export (`pub use child::Item`) points at the child.

Prints every breach and exits 1 if there is one. `--report` prints the
longest function and module and the crate sizes as well."""
import os, re, sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MAX_FN, MAX_MOD = 60, 400
TEST_FILE = re.compile(r"(_tests|_props|/tests)\.rs$")


def rust_files(crate):
    for d, _, fs in os.walk(os.path.join(crate, "src")):
        for f in fs:
            if f.endswith(".rs"):
                yield os.path.join(d, f)


def strip(text):
    """The text without comments, strings and `#[cfg(test)] mod … { … }`."""
    strip.test_lines = 0
    # One pass, so that `//` in a string and a quote in a comment are each
    # read for what they are.
    token = re.compile(
        r'r#"[\s\S]*?"#|"(?:\\[\s\S]|[^"\\])*"|//[^\n]*|\'(?:\\[\s\S]|[^\'\\])\''
    )

    def blank(m):
        t = m.group(0)
        if t.startswith("//"):
            return ""
        return '""' + "\n" * t.count("\n")

    text = token.sub(blank, text)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while depth and j < len(text):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        out.append("\n" * text[m.start():j].count("\n"))
        strip.test_lines += text[m.start():j].count("\n")
        i = j
    out.append(text[i:])
    return "".join(out)


def functions(text):
    """(name, first line, length in lines) of every fn with a body."""
    for m in re.finditer(r"\bfn\s+(\w+)[^;{]*\{", text):
        depth, j = 1, m.end()
        while depth and j < len(text):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        start = text.count("\n", 0, m.start()) + 1
        yield m.group(1), start, text.count("\n", m.start(), j) + 1


def module_of(crate, path):
    rel = os.path.relpath(path, os.path.join(crate, "src"))[:-3].split(os.sep)
    if rel == ["lib"]:
        return ()
    if rel == ["main"]:
        # A binary next to a library is a crate of its own.
        return ("<main>",) if os.path.exists(os.path.join(crate, "src", "lib.rs")) else ()
    if rel[-1] == "mod":
        rel = rel[:-1]
    return tuple(rel)


def check_crate(crate, breaches, report):
    mods, texts, sizes = {}, {}, {}
    for f in rust_files(crate):
        if TEST_FILE.search(f):
            continue
        raw = open(f).read()
        mods[module_of(crate, f)] = f
        texts[module_of(crate, f)] = strip(raw)
        sizes[module_of(crate, f)] = raw.count("\n") - strip.test_lines
    lines = 0
    for m, text in texts.items():
        n = sizes[m]
        lines += n
        rel = os.path.relpath(mods[m], ROOT)
        report["modules"].append((n, rel))
        if n > MAX_MOD:
            breaches.append(f"{rel}: {n} lines (at most {MAX_MOD}, tests apart)")
        for name, line, length in functions(text):
            report["functions"].append((length, f"{rel}:{line} {name}"))
            if length > MAX_FN:
                breaches.append(f"{rel}:{line}: fn {name} is {length} lines (at most {MAX_FN})")
    report["crates"].append((os.path.basename(crate), lines))
    # Items re-exported by a module: name -> the module they come from.
    reexp = {}
    for m, text in texts.items():
        for u in re.finditer(r"pub(?:\([^)]*\))?\s+use\s+([\w:]+)::\{?([\w\s,]+)\}?;", text):
            src = resolve(m, u.group(1).split("::"), mods)
            for name in re.split(r"[\s,]+", u.group(2).strip()):
                if src is not None and name:
                    reexp[(m, name)] = src
    deps = {m: set() for m in mods}
    for m, text in texts.items():
        # `use crate::a::{b, c::d}` names `crate::a::b` and `crate::a::c`.
        for g in re.finditer(r"\b((?:crate|super)(?:::\w+)*)::\{([^{}]*)\}", text):
            for item in g.group(2).split(","):
                first = item.strip().split("::")[0].split(" ")[0]
                if first and first != "self":
                    target = resolve(m, g.group(1).split("::") + [first], mods, reexp)
                    if target is not None and target != m:
                        deps[m].add(target)
        for p in re.finditer(r"\b((?:crate|super)(?:::\w+)+)", text):
            parts = p.group(1).split("::")
            target = resolve(m, parts, mods, reexp)
            if target is not None and target != m:
                deps[m].add(target)
        # A child module used by a relative path (`child::item`), except
        # in a re-export, which only names it.
        body = re.sub(r"pub(?:\([^)]*\))?\s+use\s+[^;]*;", "", text)
        for c in re.finditer(r"(?<![:\w])(\w+)::", body):
            child = m + (c.group(1),)
            if child in mods:
                deps[m].add(child)
    for cycle in cycles(deps):
        names = [os.path.relpath(mods[c], ROOT) for c in cycle]
        breaches.append("import circle: " + " -> ".join(names + names[:1]))


def resolve(here, parts, mods, reexp=None):
    """The module a path's item lives in."""
    cur = list(here) if parts[0] != "crate" else []
    i = 1 if parts[0] == "crate" else 0
    while i < len(parts) and parts[i] == "super":
        cur = cur[:-1]
        i += 1
    if parts[0] == "self":
        i = 1
    while i < len(parts) and tuple(cur + [parts[i]]) in mods:
        cur.append(parts[i])
        i += 1
    cur = tuple(cur)
    if i < len(parts) and reexp and (cur, parts[i]) in reexp:
        return reexp[(cur, parts[i])]
    return cur if cur in mods else None


def cycles(deps):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in deps[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(deps):
        if v not in index:
            visit(v)
    return out


def main():
    sys.setrecursionlimit(10000)
    breaches, report = [], {"modules": [], "functions": [], "crates": []}
    crates = sorted(os.path.join(ROOT, "crates", c) for c in os.listdir(os.path.join(ROOT, "crates")))
    for crate in crates:
        check_crate(crate, breaches, report)
    if "--report" in sys.argv:
        for name, n in report["crates"]:
            print(f"crate {name}: {n} lines (tests apart)")
        print("longest function: %d lines, %s" % max(report["functions"]))
        print("longest module: %d lines, %s" % max(report["modules"]))
    for b in breaches:
        print(b)
    if breaches:
        print(f"{len(breaches)} breaches of the house rules (scripts/check-structure.py)")
        sys.exit(1)


main()
