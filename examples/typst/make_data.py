"""Generate the LaTeX -> Typst math data set of the quickstart.

Each formula is built from a small grammar and rendered twice, as LaTeX and as Typst, in the
style of the tex2typst converter (``\\frac{a}{b+c}`` -> ``a/(b + c)``, ``\\to`` -> ``->``,
``x^{n-1}`` -> ``x^(n - 1)``, an inline ``/`` -> ``\\/``), so the labels are right by
construction and need no Node or converter. The formulas are invented here; none comes from
../shared/data/typst, which is kept for evaluation only.

    python examples/typst/make_data.py            # writes train.jsonl and val.jsonl beside this file
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path

PROMPT = "Convert this LaTeX math to Typst:\n"

VARS = list("xyzabcnktuvmprs")
UPPER = list("ABCDFGHMNPQRSTV")
GREEK = ["alpha", "beta", "gamma", "delta", "epsilon", "theta", "lambda", "mu", "sigma", "phi", "omega", "pi",
         "rho", "tau"]
GREEK_UPPER = ["Gamma", "Delta", "Theta", "Lambda", "Sigma", "Phi", "Omega"]
FUNCS = ["sin", "cos", "tan", "log", "ln", "exp", "sin", "cos", "ln", "det", "sinh", "cosh", "tanh", "sec", "cot"]
RELATIONS = [("=", "="), ("=", "="), ("=", "="), ("<", "<"), (">", ">"), ("\\le", "<="), ("\\leq", "<="),
             ("\\ge", ">="), ("\\geq", ">="), ("\\neq", "!="), ("\\approx", "approx"), ("\\equiv", "equiv")]
SETS = [("\\mathbb{R}", "RR"), ("\\mathbb{N}", "NN"), ("\\mathbb{Z}", "ZZ"), ("\\mathbb{Q}", "QQ"),
        ("\\mathbb{C}", "CC")]


@dataclass(frozen=True)
class Math:
    tex: str
    typst: str
    simple: bool  # one Typst token: needs no parentheses as a fraction part or script


def atom(rng: random.Random, numbers: bool = True) -> Math:
    kind = rng.random() if numbers else rng.choice([0.0, 0.8, 0.95])
    if kind < 0.45:
        v = rng.choice(VARS)
        return Math(v, v, True)
    if kind < 0.75:
        n = str(rng.choice([rng.randint(0, 9), rng.randint(2, 20), rng.randint(10, 99)]))
        return Math(n, n, True)
    if kind < 0.92:
        g = rng.choice([*GREEK, "ell", "varepsilon"])
        return Math(f"\\{g}", {"varepsilon": "epsilon"}.get(g, g), True)
    g = rng.choice(GREEK_UPPER)
    return Math(f"\\{g}", g, True)


def script(rng: random.Random, depth: int) -> Math:
    """A subscript or exponent body."""
    r = rng.random()
    if r < 0.55:
        return atom(rng)
    if r < 0.8 or depth > 1:
        v, n = rng.choice([*VARS[:6], "n", "k"]), rng.randint(1, 3)
        op = rng.choice(["+", "-"])
        return Math(f"{v}{op}{n}", f"{v} {op} {n}", False)
    if r < 0.9:
        n = rng.randint(1, 3)
        return Math(f"-{n}", f"-{n}", False)
    return expr(rng, depth + 1, terms=2)


def wrap(m: Math) -> str:
    return m.typst if m.simple else f"({m.typst})"


def scripted(rng: random.Random, depth: int) -> Math:
    base = atom(rng, numbers=False) if rng.random() < 0.8 else Math(rng.choice(UPPER), rng.choice(UPPER), True)
    base = Math(base.typst, base.typst, True) if not base.tex.startswith("\\") else base
    r = rng.random()
    if r < 0.45:
        sup = script(rng, depth)
        braces = f"{{{sup.tex}}}" if not sup.simple or len(sup.tex) > 1 or rng.random() < 0.5 else sup.tex
        return Math(f"{base.tex}^{braces}", f"{base.typst}^{wrap(sup)}", False)
    if r < 0.8:
        sub = atom(rng) if rng.random() < 0.7 else script(rng, depth)
        braces = f"{{{sub.tex}}}" if not sub.simple or len(sub.tex) > 1 or rng.random() < 0.4 else sub.tex
        return Math(f"{base.tex}_{braces}", f"{base.typst}_{wrap(sub)}", False)
    sub, sup = atom(rng), script(rng, depth)
    return Math(f"{base.tex}_{{{sub.tex}}}^{{{sup.tex}}}", f"{base.typst}_{wrap(sub)}^{wrap(sup)}", False)


def fraction(rng: random.Random, depth: int) -> Math:
    r = rng.random()
    if r < 0.12:  # \frac12, \frac 1x: one-character parts need no braces
        a, b = rng.choice("123456789xyn"), rng.choice("23456789xyzn")
        return Math(f"\\frac{a}{b}" if a.isdigit() else f"\\frac {a}{b}", f"{a}/{b}", False)
    if r < 0.27:  # an inline slash, which tex2typst escapes
        a, b = atom(rng), atom(rng)
        return Math(f"{a.tex}/{b.tex}", f"{a.typst} \\/ {b.typst}", False)
    num = factor(rng, depth + 1) if rng.random() < 0.5 else expr(rng, depth + 1, terms=rng.randint(1, 2))
    den = factor(rng, depth + 1) if rng.random() < 0.5 else expr(rng, depth + 1, terms=rng.randint(1, 2))
    cmd = rng.choice(["\\frac", "\\frac", "\\frac", "\\dfrac"])
    typst = f"{wrap(num)}/{wrap(den)}"
    if cmd == "\\dfrac":
        typst = f"display({typst})"
    return Math(f"{cmd}{{{num.tex}}}{{{den.tex}}}", typst, False)


def root(rng: random.Random, depth: int) -> Math:
    body = expr(rng, depth + 1, terms=rng.randint(1, 2))
    if rng.random() < 0.25:
        n = rng.choice(["3", "n", "4"])
        return Math(f"\\sqrt[{n}]{{{body.tex}}}", f"root({n}, {body.typst})", True)
    return Math(f"\\sqrt{{{body.tex}}}", f"sqrt({body.typst})", True)


def function(rng: random.Random, depth: int) -> Math:
    name = rng.choice(FUNCS)
    if rng.random() < 0.5:
        arg = atom(rng)
        return Math(f"\\{name} {arg.tex}", f"{name} {arg.typst}", False)
    arg = expr(rng, depth + 1, terms=rng.randint(1, 2))
    return Math(f"\\{name}({arg.tex})", f"{name}({arg.typst})", False)


def call(rng: random.Random, depth: int) -> Math:
    f = rng.choice(["f", "g", "h", "F", "u", "p"])
    args = [expr(rng, depth + 1, terms=1) for _ in range(rng.choice([1, 1, 1, 2]))]
    return Math(f"{f}({','.join(a.tex for a in args)})", f"{f}({', '.join(a.typst for a in args)})", False)


def group(rng: random.Random, depth: int) -> Math:
    body = expr(rng, depth + 1, terms=rng.randint(2, 3))
    left, right, t_left, t_right = rng.choice([("(", ")", "(", ")"), ("\\left(", "\\right)", "(", ")"),
                                               ("[", "]", "[", "]"), ("\\left[", "\\right]", "[", "]"),
                                               ("\\{", "\\}", "{", "}"), ("\\left\\{", "\\right\\}", "{", "}"),
                                               ("|", "|", "|", "|"), ("\\bigl(", "\\bigr)", "(", ")"),
                                               ("\\Bigl(", "\\Bigr)", "(", ")"),
                                               ("\\left\\|", "\\right\\|", "norm(", ")")])
    m = Math(f"{left}{body.tex}{right}", f"{t_left}{body.typst}{t_right}", True)
    if rng.random() < 0.3:
        n = rng.choice(["2", "3", "n"])
        return Math(f"{m.tex}^{n}", f"{m.typst}^{n}", False)
    return m


def primed(rng: random.Random, depth: int) -> Math:
    f = rng.choice(["f", "g", "y", "u", "v", "F", "h"])
    marks, typst = rng.choice([("'", "'"), ("'", "'"), ("''", "^(' ')")])
    name = f"{f}{typst}"
    if rng.random() < 0.5:
        return Math(f"{f}{marks}", name, marks == "'")
    arg = expr(rng, depth + 1, terms=1)
    return Math(f"{f}{marks}({arg.tex})", f"{name} ({arg.typst})", False)


def decorated(rng: random.Random) -> Math:
    v = rng.choice(VARS + UPPER[:4])
    if rng.random() < 0.2:  # a vector between two points
        a, b = rng.sample(UPPER, 2)
        return Math(f"\\overrightarrow{{{a}{b}}}", f"arrow({a} {b})", True)
    cmd, fn = rng.choice([("\\vec", "arrow"), ("\\hat", "hat"), ("\\bar", "macron"), ("\\overline", "overline"),
                          ("\\tilde", "tilde"), ("\\dot", "dot"), ("\\ddot", "dot.double")])
    return Math(f"{cmd}{{{v}}}", f"{fn}({v})", True)


def styled(rng: random.Random) -> Math:
    v = rng.choice([*UPPER, "v", "x"])
    cmd, wrap_fn = rng.choice([("\\mathbf", "upright(bold({}))"), ("\\mathcal", "cal({})"),
                               ("\\mathrm", "upright({})"), ("\\mathbb", "bb({})"), ("\\boldsymbol", "bold({})")])
    if cmd == "\\mathbb" and v in "RNZQC":
        return Math(f"\\mathbb{{{v}}}", v * 2, True)
    return Math(f"{cmd}{{{v}}}", wrap_fn.format(v), True)


def small_fraction(rng: random.Random, depth: int) -> Math:
    """\\tfrac, which tex2typst writes as frac(a, b)."""
    if rng.random() < 0.5:
        a, b = rng.choice("123456789"), rng.choice("23456789")
        return Math(f"\\tfrac{a}{b}", f"frac({a}, {b})", True)
    num, den = atom(rng), expr(rng, depth + 1, terms=rng.randint(1, 2))
    return Math(f"\\tfrac{{{num.tex}}}{{{den.tex}}}", f"frac({num.typst}, {den.typst})", True)


def named(rng: random.Random, depth: int) -> Math:
    """Operators LaTeX has no command for, and inner products."""
    if rng.random() < 0.5:
        name = rng.choice(["rank", "tr", "span", "erf", "sgn", "proj"])
        arg = expr(rng, depth + 1, terms=1)
        return Math(f"\\operatorname{{{name}}}({arg.tex})", f'op("{name}")({arg.typst})', False)
    u, v = rng.sample(["u", "v", "w", "f", "g", "x", "y"], 2)
    return Math(f"\\langle {u},{v}\\rangle", f"chevron.l {u}, {v} chevron.r", False)


def partial(rng: random.Random, depth: int) -> Math:
    f, x = rng.choice(["f", "u", "F", "y"]), rng.choice(["x", "y", "t"])
    if rng.random() < 0.3:
        return Math(f"\\nabla {f}", f"nabla {f}", False)
    return Math(f"\\frac{{\\partial {f}}}{{\\partial {x}}}", f"(partial {f})/(partial {x})", False)


def factor(rng: random.Random, depth: int, numbers: bool = True) -> Math:
    if depth > 1:
        return atom(rng, numbers)
    choices = [(atom, 30), (scripted, 25), (fraction, 10), (root, 6), (function, 8), (call, 8), (group, 7),
               (decorated, 3), (styled, 3), (primed, 4), (small_fraction, 3), (named, 2), (partial, 2)]
    r = rng.uniform(0, sum(w for _, w in choices))
    for fn, weight in choices:
        r -= weight
        if r <= 0:
            if fn is atom:
                return atom(rng, numbers)
            return fn(rng) if fn in (decorated, styled) else fn(rng, depth)
    return atom(rng, numbers)


def term(rng: random.Random, depth: int) -> Math:
    n = rng.choices([1, 2, 3], weights=[60, 33, 7])[0]
    # Only the first factor may be a number: LaTeX would read "8" then "75" as 875.
    parts = [factor(rng, depth, numbers=i == 0) for i in range(n)]
    tex = ""
    for p in parts:
        # LaTeX needs a space only between a command and a following letter; single letters are
        # often written side by side (PDP^{-1}), which still means a product.
        letters = tex[-1:].isalpha() and p.tex[0].isalpha() and not tex.rstrip("abcdefghijklmnopqrstuvwxyz"
                                                                                  "ABCDEFGHIJKLMNOPQRSTUVWXYZ").endswith("\\")
        sep = " " if tex and (tex[-1].isalpha() and (p.tex[0].isalpha() or p.tex[0] == "\\")) else ""
        if letters and rng.random() < 0.6:
            sep = ""
        tex += sep + p.tex
    if n == 1:
        return parts[0]
    return Math(tex, " ".join(p.typst for p in parts), False)


def expr(rng: random.Random, depth: int = 0, terms: int | None = None) -> Math:
    n = terms or rng.choices([1, 2, 3, 4], weights=[40, 35, 18, 7])[0]
    first = term(rng, depth)
    tex, typst = first.tex, first.typst
    for _ in range(n - 1):
        op_tex, op_typst = rng.choice([("+", "+"), ("-", "-"), ("+", "+"), ("\\cdot", "dot.op"),
                                       ("\\times", "times"), ("\\pm", "plus.minus")])
        t = term(rng, depth)
        tex += f"{op_tex} {t.tex}" if op_tex.startswith("\\") else f"{op_tex}{t.tex}"
        typst += f" {op_typst} {t.typst}"
    return Math(tex, typst, n == 1 and first.simple)


def big_operator(rng: random.Random) -> Math:
    i = rng.choice(["i", "k", "j", "n"])
    lo, hi = rng.choice(["0", "1"]), rng.choice(["n", "N", "\\infty", "10", "m"])
    hi_typst = "infinity" if hi == "\\infty" else hi
    body = expr(rng, 1, terms=rng.randint(1, 2))
    kind = rng.random()
    if kind < 0.35:
        return Math(f"\\sum_{{{i}={lo}}}^{{{hi}}} {body.tex}", f"sum_({i} = {lo})^{hi_typst} {body.typst}", False)
    if kind < 0.45:
        return Math(f"\\prod_{{{i}={lo}}}^{{{hi}}} {body.tex}", f"product_({i} = {lo})^{hi_typst} {body.typst}",
                    False)
    if kind < 0.75:
        v = rng.choice(["x", "t", "u"])
        a, b = rng.choice([("0", "1"), ("a", "b"), ("0", "\\infty"), ("-1", "1"), ("0", "\\pi")])
        b_t = {"\\infty": "infinity", "\\pi": "pi"}.get(b, b)
        a_t = "(-1)" if a == "-1" else a
        return Math(f"\\int_{{{a}}}^{{{b}}} {body.tex}\\, d{v}", f"integral_{a_t}^{b_t} {body.typst} thin d {v}",
                    False)
    v = rng.choice(["x", "n", "h", "t"])
    target, target_t = rng.choice([("0", "0"), ("\\infty", "infinity"), ("1", "1"), ("a", "a")])
    arrow = rng.choice(["\\to", "\\rightarrow"])
    return Math(f"\\lim_{{{v}{arrow} {target}}} {body.tex}", f"lim_({v} -> {target_t}) {body.typst}", False)


def statement(rng: random.Random) -> Math:
    """One formula: an equation, an inequality, a set membership, a sequence or an operator."""
    r = rng.random()
    if r < 0.45:
        left, right = expr(rng), expr(rng)
        rel_tex, rel_typst = rng.choice(RELATIONS)
        sep = " " if rel_tex.startswith("\\") else ""
        if rng.random() < 0.15 and not right.tex.startswith("-"):
            glue = "" if right.typst.startswith("(") else " "
            right = Math(f"-{right.tex}", f"-{glue}{right.typst}", False)
        return Math(f"{left.tex}{sep}{rel_tex}{sep}{right.tex}", f"{left.typst} {rel_typst} {right.typst}", False)
    if r < 0.6:
        op = big_operator(rng)
        right = expr(rng, terms=rng.randint(1, 2))
        return Math(f"{op.tex} = {right.tex}", f"{op.typst} = {right.typst}", False)
    if r < 0.7:
        v = rng.choice(VARS + UPPER)
        s_tex, s_typst = rng.choice(SETS)
        rel_tex, rel_typst = rng.choice([("\\in", "in"), ("\\notin", "in.not"), ("\\subseteq", "subset.eq"),
                                         ("\\subset", "subset")])
        power = rng.choice(["", "", "^n", "^2"])
        return Math(f"{v} {rel_tex} {s_tex}{power}", f"{v} {rel_typst} {s_typst}{power}", False)
    if r < 0.78:
        v = rng.choice(VARS[:5])
        ops = rng.choice([(",", ", ", "\\ldots", "..."), ("+", " + ", "\\cdots", "dots.c")])
        sep_tex, sep_typst, dots_tex, dots_typst = ops
        tex = sep_tex.join([f"{v}_1", f"{v}_2", dots_tex, f"{v}_n"])
        typst = sep_typst.join([f"{v}_1", f"{v}_2", dots_typst, f"{v}_n"])
        return Math(tex, typst, False)
    if r < 0.85:
        f, v = rng.choice(["f", "g", "T", "S"]), rng.choice(["x", "v"])
        a, b = rng.choice(SETS), rng.choice(SETS)
        return Math(f"{f}:{a[0]}\\to {b[0]}", f"{f} : {a[1]} -> {b[1]}", False)
    if r < 0.89:
        return big_operator(rng)
    if r < 0.93:
        return sequence(rng)
    return prose(rng)


CONDITIONS = [("for", "for"), ("if", "if"), ("when", "when"), ("where", "where")]


def condition(rng: random.Random) -> Math:
    v = rng.choice(VARS)
    rel_tex, rel_typst = rng.choice([("<", "<"), (">", ">"), ("\\geq", ">="), ("\\le", "<="), ("\\neq", "!="),
                                     ("\\in", "in")])
    number = str(rng.randint(0, 9))
    rhs = rng.choice(SETS) if rel_tex == "\\in" else (number, number)
    sep = " " if rel_tex.startswith("\\") else ""
    return Math(f"{v}{sep}{rel_tex}{sep}{rhs[0]}", f"{v} {rel_typst} {rhs[1]}", False)


def prose(rng: random.Random) -> Math:
    """Formulas with words and spacing, as textbooks write them: \\text{for } x > 0 after \\quad, piecewise
    definitions with cases, implications, set-builder notation."""
    r = rng.random()
    if r < 0.35:  # f(x) = x^2 \quad \text{for } x > 0
        left, right = expr(rng, terms=1), expr(rng, terms=rng.randint(1, 2))
        space_tex, space_typst = rng.choice([("\\quad", "quad"), ("\\qquad", "wide"), (",\\quad", ", quad")])
        word, _ = rng.choice(CONDITIONS)
        cond = condition(rng)
        return Math(f"{left.tex}={right.tex} {space_tex} \\text{{{word} }}{cond.tex}",
                    f'{left.typst} = {right.typst} {space_typst} "{word} " {cond.typst}', False)
    if r < 0.6:  # a piecewise definition
        f, v = rng.choice(["f", "g", "h"]), rng.choice(["x", "t"])
        rows_tex, rows_typst = [], []
        for i in range(rng.choice([2, 2, 3])):
            value = expr(rng, 1, terms=rng.randint(1, 2))
            if i == 1 and rng.random() < 0.4:
                rows_tex.append(f"{value.tex} & \\text{{otherwise}}")
                rows_typst.append(f'{value.typst} & "otherwise"')
                break
            word, _ = rng.choice(CONDITIONS[:2])
            cond = condition(rng)
            rows_tex.append(f"{value.tex} & \\text{{{word} }}{cond.tex}")
            rows_typst.append(f'{value.typst} & "{word} " {cond.typst}')
        body = " \\\\ ".join(rows_tex)
        return Math(f"{f}({v}) = \\begin{{cases}} {body} \\end{{cases}}", f"{f}({v}) = cases({', '.join(rows_typst)})",
                    False)
    if r < 0.8:  # a \implies b, a \iff b
        a, b = condition(rng), condition(rng)
        arrow_tex, arrow_typst = rng.choice([("\\implies", "==>"), ("\\iff", "<==>"), ("\\Rightarrow", "=>"),
                                             ("\\Leftrightarrow", "<=>")])
        return Math(f"{a.tex} {arrow_tex} {b.tex}", f"{a.typst} {arrow_typst} {b.typst}", False)
    v = rng.choice(VARS)  # set-builder notation: tex2typst writes \mid as divides
    s_tex, s_typst = rng.choice(SETS)
    cond = condition(rng)
    return Math(f"\\{{{v}\\in {s_tex} \\mid {cond.tex}\\}}", f"{{{v} in {s_typst} divides {cond.typst}}}", False)


def sequence(rng: random.Random) -> Math:
    """Lists as textbooks write them: (1,1,0,\\ldots), 0,\\ 1,\\ 2, and {1,\\ldots,k}."""
    items = [str(rng.randint(0, 30)) if rng.random() < 0.6 else rng.choice(VARS) for _ in range(rng.randint(3, 7))]
    sep_tex, sep_typst = rng.choice([(",", ", "), (", ", ", "), (",\\ ", ", med ")])
    tex, typst = sep_tex.join(items), sep_typst.join(items)
    if rng.random() < 0.6:
        tex, typst = f"{tex}{sep_tex}\\ldots", f"{typst}{sep_typst}..."
    left, right, t_left, t_right = rng.choice([("(", ")", "(", ")"), ("\\{", "\\}", "{", "}"),
                                               ("\\left\\{", "\\right\\}", "{", "}"), ("", "", "", "")])
    head = rng.choice(["", "", f"{rng.choice(VARS)} = ", f"{rng.choice(VARS)}\\in"])
    head_t = {"": ""}.get(head, head.replace("\\in", " in ").replace("  ", " "))
    return Math(f"{head}{left}{tex}{right}", f"{head_t}{t_left}{typst}{t_right}", False)


def finish(rng: random.Random, m: Math) -> Math:
    """What surrounds a displayed formula: \\displaystyle, and the sentence's full stop or comma."""
    if rng.random() < 0.06 and "," not in m.typst:  # display(a, b) would be two arguments
        glue = "" if not m.tex[0].isalpha() and rng.random() < 0.5 else " "
        m = Math(f"\\displaystyle{glue}{m.tex}", f"display({m.typst})", False)
    if rng.random() < 0.12:
        mark = rng.choice([".", ".", ","])
        m = Math(f"{m.tex}{mark}", f"{m.typst} {mark}", False)
    return m


def example(m: Math) -> dict:
    return {"prompt": [{"role": "user", "content": PROMPT + m.tex}],
            "completion": [{"role": "assistant", "content": m.typst}]}


def generate(count: int, seed: int, exclude: set[str] = frozenset()) -> list[Math]:
    rng = random.Random(seed)
    seen, out = set(exclude), []
    while len(out) < count:
        m = finish(rng, statement(rng))
        if m.tex in seen or len(m.tex) > 160:
            continue
        seen.add(m.tex)
        out.append(m)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=900, help="training pairs")
    parser.add_argument("--val", type=int, default=60, help="validation pairs")
    parser.add_argument("--seed", type=int, default=20261123)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    train = generate(args.train, args.seed)
    val = generate(args.val, args.seed + 1, exclude={m.tex for m in train})
    for name, rows in (("train.jsonl", train), ("val.jsonl", val)):
        with (args.out / name).open("w", encoding="utf-8") as f:
            for m in rows:
                f.write(json.dumps(example(m), ensure_ascii=False) + "\n")
        print(f"wrote {len(rows)} pairs to {args.out / name}")


if __name__ == "__main__":
    main()
