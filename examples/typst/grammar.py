"""Invented LaTeX formulas in the shapes textbooks write: a small random grammar, LaTeX only.

The Typst side is not written here: make_data.py labels every formula with tex2typst itself,
the converter the real evaluation sets were labelled with. Each function returns LaTeX source
for one construct family; ``formula`` picks among them with weights that follow how often
textbook math uses each (fractions, scripts, limits, sums, piecewise definitions, systems of
equations in ``array``, prose in ``\\text``, spacing commands).
"""

from __future__ import annotations

import random

VARS = list("xyzabcnktuvmprs")
UPPER = list("ABCDFGHMNPQRSTV")
GREEK = ["alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "theta", "lambda", "mu", "sigma", "phi",
         "varphi", "omega", "pi", "rho", "tau", "ell", "xi", "eta"]
GREEK_UPPER = ["Gamma", "Delta", "Theta", "Lambda", "Sigma", "Phi", "Omega"]
FUNCS = ["sin", "cos", "tan", "log", "ln", "exp", "sin", "cos", "ln", "det", "sinh", "cosh", "tanh", "sec", "cot",
         "arcsin", "arctan"]
RELATIONS = ["=", "=", "=", "<", ">", "\\le", "\\leq", "\\ge", "\\geq", "\\neq", "\\approx", "\\equiv", "\\sim"]
SETS = ["\\mathbb{R}", "\\mathbb{N}", "\\mathbb{Z}", "\\mathbb{Q}", "\\mathbb{C}"]
OPERATORS = ["+", "-"] * 6 + ["\\cdot", "\\cdot", "\\times", "\\pm", "\\circ"]  # \\mp and \\star are rarer (in expr)
SPACES = ["\\,", "\\;", "\\:", "\\quad", "\\qquad", "~", "\\ "]
ARROWS = ["\\to", "\\to", "\\rightarrow", "\\searrow", "\\nearrow", "\\leftarrow"]
LINE_BREAK = " \\\\ "
WORDS = ["for", "if", "when", "where", "otherwise", "and", "or", "for all", "such that", "is even",
         "units", "meters", "seconds", "area", "volume", "total", "[chain rule]", "[by definition]", "[sum rule]",
         "[linearity]", "[integration by parts]", "[first-order term]", "(given)", "odd", "rows", "dim"]


def pick(rng: random.Random, weighted: list[tuple[object, int]]) -> object:
    return rng.choices([item for item, _ in weighted], weights=[w for _, w in weighted])[0]


def atom(rng: random.Random, numbers: bool = True) -> str:
    kind = rng.random() if numbers else rng.choice([0.0, 0.8, 0.95])
    if kind < 0.45:
        return rng.choice(VARS)
    if kind < 0.75:
        if rng.random() < 0.1:
            return f"{rng.randint(0, 9)}.{rng.randint(1, 99)}"
        return str(rng.choice([rng.randint(0, 9), rng.randint(2, 20), rng.randint(10, 99)]))
    if kind < 0.92:
        return f"\\{rng.choice(GREEK)}"
    return f"\\{rng.choice(GREEK_UPPER)}"


def braced(rng: random.Random, body: str, optional: float = 0.5) -> str:
    """A script or argument: braces when LaTeX needs them, and often when it does not."""
    return f"{{{body}}}" if len(body) > 1 or rng.random() < optional else body


def script(rng: random.Random, depth: int) -> str:
    """A subscript or exponent body."""
    r = rng.random()
    if r < 0.5:
        return atom(rng)
    if r < 0.75 or depth > 1:
        return f"{rng.choice([*VARS[:6], 'n', 'k'])}{rng.choice('+-')}{rng.randint(1, 3)}"
    if r < 0.85:
        return f"-{rng.choice(['1', '2', '3', 'n', 'x'])}"
    if r < 0.92:
        return rng.choice(["ij", "i,j", "n+1", "2n", "k-1", "\\prime", "*", "T", "i1", "in", "mn", "1n", "i2",
                           "\\text{th}", "B,C", "100", "20", "*", "{*}", "1000000"])
    return expr(rng, depth + 1, terms=2)


def scripted(rng: random.Random, depth: int) -> str:
    base = atom(rng, numbers=False) if rng.random() < 0.8 else rng.choice(UPPER)
    r = rng.random()
    if r < 0.45:
        return f"{base}^{braced(rng, script(rng, depth))}"
    if r < 0.8:
        sub = atom(rng) if rng.random() < 0.7 else script(rng, depth)
        return f"{base}_{braced(rng, sub, 0.4)}"
    return f"{base}_{{{atom(rng)}}}^{{{script(rng, depth)}}}"


def simple_part(rng: random.Random) -> str:
    """What sits in most textbook fractions: a number, a letter, or one small thing (tex2typst decides the
    parentheses: ``1/2``, ``1/(4!)``, ``k/(m_3)``, ``1/sqrt(5)``)."""
    return pick(rng, [(str(rng.randint(1, 9)), 30), (str(rng.randint(10, 99)), 8), (rng.choice(VARS), 20),
                      (f"{rng.randint(2, 9)}{rng.choice(VARS)}", 10), (f"{rng.choice(VARS)}^{rng.randint(2, 4)}", 8),
                      (f"{rng.randint(2, 6)}!", 4), (f"{rng.choice(VARS)}_{rng.randint(1, 3)}", 6),
                      (f"\\sqrt{{{rng.randint(2, 7)}}}", 5), (f"\\{rng.choice(GREEK)}", 6),
                      (f"\\det({rng.choice(UPPER)})", 2),
                      (f"{rng.randint(1, 9)}{rng.choice('+-')}{rng.randint(1, 9)}i", 3)])


def monomial(rng: random.Random) -> str:
    """A coefficient and letters side by side (3x^2y, ab, 2\\pi r, xy): tex2typst spaces every factor."""
    letters = [rng.choice(VARS) + (f"^{rng.randint(2, 3)}" if rng.random() < 0.25 else "")
               for _ in range(rng.choice([1, 2, 2, 3]))]
    if rng.random() < 0.15:
        letters.insert(0, "\\pi ")
    coefficient = rng.choice(["", "", str(rng.randint(2, 12))])
    return coefficient + "".join(letters)


def fraction(rng: random.Random, depth: int) -> str:
    if rng.random() < 0.55:  # \frac{1}{2}, \frac{a}{r}, \frac{2}{29}: the most common kind
        return f"\\frac{{{simple_part(rng)}}}{{{simple_part(rng)}}}"
    r = rng.random()
    if r < 0.12:  # \frac12, \frac 1x: one-character parts need no braces
        a, b = rng.choice("123456789xyn"), rng.choice("23456789xyzn")
        return f"\\frac{a}{b}" if a.isdigit() else f"\\frac {a}{b}"
    if r < 0.3:  # an inline slash, which tex2typst writes as \\/
        left = atom(rng) if rng.random() < 0.6 else f"({expr(rng, 2, terms=2)})"
        right = atom(rng) if rng.random() < 0.6 else f"({expr(rng, 2, terms=2)})"
        return f"{left}/{right}"
    if r < 0.36:  # words over words, as in units
        return f"\\frac{{\\text{{{rng.choice(WORDS[10:])}}}}}{{\\text{{{rng.choice(WORDS[10:])}}}}}"
    num = factor(rng, depth + 1) if rng.random() < 0.5 else expr(rng, depth + 1, terms=rng.randint(1, 3))
    den = factor(rng, depth + 1) if rng.random() < 0.5 else expr(rng, depth + 1, terms=rng.randint(1, 2))
    cmd = rng.choice(["\\frac", "\\frac", "\\frac", "\\frac", "\\dfrac", "\\tfrac"])
    gap = rng.choice(["", "", " "])  # \frac {2x}{3} and \frac{a} {b} both occur
    return f"{cmd}{gap}{{{num}}}{gap}{{{den}}}"


def root(rng: random.Random, depth: int) -> str:
    body = expr(rng, depth + 1, terms=rng.randint(1, 2))
    if rng.random() < 0.25:
        return f"\\sqrt[{rng.choice(['3', 'n', '4'])}]{{{body}}}"
    return f"\\sqrt{{{body}}}"


def function(rng: random.Random, depth: int) -> str:
    name = rng.choice(FUNCS)
    power = rng.choice(["", "", "", "^2", "^{-1}", "^{2}"])
    r = rng.random()
    if r < 0.45:
        arg = atom(rng)
        gap = " " if arg.startswith("\\") else ""  # \\sin 2x, but \\cos \\theta t
        return f"\\{name}{power} {arg}{rng.choice(['', gap + rng.choice(VARS)])}"
    if r < 0.8:
        return f"\\{name}{power}({expr(rng, depth + 1, terms=rng.randint(1, 2))})"
    return f"\\{name}{power}\\left({expr(rng, depth + 1, terms=rng.randint(1, 2))}\\right)"


def call(rng: random.Random, depth: int) -> str:
    f = rng.choice(["f", "g", "h", "F", "u", "p", "F_1", "f_n", "y", "D"])
    args = [expr(rng, depth + 1, terms=1) for _ in range(rng.choice([1, 1, 1, 2]))]
    sep = rng.choice([",", ", "])
    return f"{f}({sep.join(args)})"


def product(rng: random.Random, depth: int) -> str:
    """Factors written side by side: (3+2i)(1+i), 8(1-\\lambda), (-5-\\lambda)(4-\\lambda)."""
    def small() -> str:
        sign = "-" if rng.random() < 0.35 else ""
        return f"({sign}{expr(rng, 2, terms=rng.randint(1, 2))})"
    head = rng.choice(["", "", str(rng.randint(2, 9)), "-", rng.choice(VARS)])
    return head + "".join(small() for _ in range(rng.choice([1, 2, 2, 3])))


def group(rng: random.Random, depth: int) -> str:
    body = expr(rng, depth + 1, terms=rng.randint(2, 3))
    left, right = rng.choice([("(", ")"), ("\\left(", "\\right)"), ("[", "]"), ("\\left[", "\\right]"),
                              ("\\{", "\\}"), ("\\left\\{", "\\right\\}"), ("|", "|"), ("\\left|", "\\right|"),
                              ("\\bigl(", "\\bigr)"), ("\\Bigl(", "\\Bigr)"), ("\\biggl(", "\\biggr)"),
                              ("\\bigl[", "\\bigr]"), ("\\left\\|", "\\right\\|"), ("\\|", "\\|"),
                              ("\\langle ", "\\rangle"), ("\\left|", "\\right|"), ("\\left[", "\\right]")])
    tex = f"{left}{body}{right}"
    if rng.random() < 0.25:
        tex = f"{rng.choice(['2', '3', 'a', 'x', '-'])}{tex}"
    return f"{tex}^{rng.choice(['2', '3', 'n', '{-1}'])}" if rng.random() < 0.3 else tex


def primed(rng: random.Random, depth: int) -> str:
    f = rng.choice(["f", "g", "y", "u", "v", "F", "h"])
    marks = rng.choice(["'", "'", "''", "^{\\prime}"])
    return f"{f}{marks}" if rng.random() < 0.5 else f"{f}{marks}({expr(rng, depth + 1, terms=1)})"


def decorated(rng: random.Random) -> str:
    v = rng.choice(VARS + UPPER[:4] + ["\\theta", "\\mu"])
    if rng.random() < 0.15:  # a vector between two points
        a, b = rng.sample(UPPER, 2)
        return f"\\overrightarrow{{{a}{b}}}"
    cmd = rng.choice(["\\vec", "\\hat", "\\bar", "\\overline", "\\overline", "\\tilde", "\\dot", "\\ddot",
                      "\\widehat", "\\underline", "\\widetilde"])
    return f"{cmd}{{{v}}}" if rng.random() < 0.8 else f"{cmd} {v}"


def styled(rng: random.Random) -> str:
    v = rng.choice([*UPPER, "v", "x", "u"])
    cmd = rng.choice(["\\mathbf", "\\mathcal", "\\mathrm", "\\mathbb", "\\boldsymbol", "\\mathit", "\\mathsf"])
    return f"{cmd}{{{v}}}"


def named(rng: random.Random, depth: int) -> str:
    """Operators LaTeX has no command for, and inner products."""
    if rng.random() < 0.5:
        name = rng.choice(["rank", "tr", "span", "erf", "sgn", "proj", "null", "dim"])
        return f"\\operatorname{{{name}}}({expr(rng, depth + 1, terms=1)})"
    u, v = rng.sample(["u", "v", "w", "f", "g", "x", "y"], 2)
    return f"\\langle {u},{v}\\rangle"


def partial(rng: random.Random) -> str:
    f, x = rng.choice(["f", "u", "F", "y"]), rng.choice(["x", "y", "t"])
    r = rng.random()
    if r < 0.25:
        return f"\\nabla {f}"
    if r < 0.5:
        return f"\\frac{{d{f}}}{{d{x}}}"
    if r < 0.65:
        return f"\\Delta {x}"
    return f"\\frac{{\\partial {f}}}{{\\partial {x}}}"


def factor(rng: random.Random, depth: int, numbers: bool = True) -> str:
    if depth > 1:
        return atom(rng, numbers)
    choices = [(atom, 20), (monomial, 14), (scripted, 24), (fraction, 22), (root, 6), (function, 9), (call, 8),
               (group, 8), (product, 8), (decorated, 4), (styled, 3), (primed, 4), (named, 2), (partial, 3)]
    fn = pick(rng, choices)
    if fn is atom:
        return atom(rng, numbers)
    return fn(rng) if fn in (decorated, styled, partial, monomial) else fn(rng, depth)


def term(rng: random.Random, depth: int) -> str:
    n = rng.choices([1, 2, 3], weights=[60, 33, 7])[0]
    # Only the first factor may be a number: LaTeX would read "8" then "75" as 875.
    parts = [factor(rng, depth, numbers=i == 0) for i in range(n)]
    tex = ""
    for p in parts:
        # A command followed by a letter needs a space; single letters side by side (PDP^{-1}) are a product.
        after_command = tex.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ").endswith("\\")
        needs = tex[-1:].isalpha() and (p[0].isalpha() or p[0] == "\\")
        sep = " " if needs and (after_command or p[0] == "\\" or rng.random() < 0.4) else ""
        if tex and rng.random() < 0.05:
            sep = rng.choice(["\\,", "\\;"])
        tex += sep + p
    return tex


def expr(rng: random.Random, depth: int = 0, terms: int | None = None) -> str:
    n = terms or rng.choices([1, 2, 3, 4], weights=[40, 35, 18, 7])[0]
    tex = term(rng, depth)
    for _ in range(n - 1):
        op = rng.choice(OPERATORS) if rng.random() < 0.97 else rng.choice(["\\mp", "\\star"])
        t = term(rng, depth)
        tex += f"{op} {t}" if op.startswith("\\") else rng.choice([f"{op}{t}", f" {op} {t}"])
    if n >= 3 and depth == 0 and rng.random() < 0.15:  # a_1 + \ldots + a_n
        v = rng.choice(VARS[:5])
        op = rng.choice(["+", "+", "-"])
        tex += f" {op} \\{rng.choice(['ldots', 'cdots', 'dots'])} {op} {v}_{{{rng.choice(['n', 'k', 'm'])}}}"
    return tex


def big_operator(rng: random.Random) -> str:
    i = rng.choice(["i", "k", "j", "n"])
    lo, hi = rng.choice(["0", "1", "-\\infty"]), rng.choice(["n", "N", "\\infty", "10", "m"])
    body = expr(rng, 1, terms=rng.randint(1, 2))
    kind = rng.random()
    if kind < 0.22:
        return f"\\sum_{{{i}={lo}}}^{{{hi}}} {body}" if rng.random() < 0.8 else f"\\sum_{i} {body}"
    if kind < 0.27:
        return f"\\prod_{{{i}={lo}}}^{{{hi}}} {body}"
    if kind < 0.31:
        return rng.choice(["\\bigcup", "\\bigcap"]) + f"_{{{i}=1}}^{{{hi}}} {rng.choice(UPPER)}_{i}"
    if kind < 0.55:
        v = rng.choice(["x", "t", "u"])
        a, b = rng.choice([("0", "1"), ("a", "b"), ("0", "\\infty"), ("-1", "1"), ("0", "\\pi"), ("-\\infty", "x")])
        space = rng.choice(["\\,", "\\,", " ", "\\;"])
        integral = rng.choice(["\\int", "\\int", "\\int", "\\iint", "\\oint"])
        return f"{integral}_{{{a}}}^{{{b}}} {body}{space}d{v}"
    v = rng.choice(["x", "n", "h", "t", "\\Delta x"])
    target = rng.choice(["0", "\\infty", "1", "a", "0^+", "-\\infty", "a+", "a-", "2", "a, x>a"])
    arrow = rng.choice(ARROWS)
    gap = rng.choice(["", " "])
    after = " " if target[0].isalpha() else gap  # \\to a, never \\toa
    return f"\\lim_{{{v}{gap}{arrow}{after}{target}}} {body}"


def relation(rng: random.Random) -> str:
    rel = rng.choice(RELATIONS)
    if rng.random() < 0.06:  # ~=~, as some books align their chains
        return f"~{rel}~" if not rel.startswith("\\") else f"~{rel}~ "
    return f" {rel} " if rel.startswith("\\") or rng.random() < 0.5 else rel


def condition(rng: random.Random) -> str:
    v = rng.choice(VARS)
    rel = rng.choice(["<", ">", "\\geq", "\\le", "\\neq", "\\in"])
    rhs = rng.choice(SETS) if rel == "\\in" else rng.choice([str(rng.randint(0, 9)), "-1", rng.choice(VARS)])
    return f"{v} {rel} {rhs}" if rel.startswith("\\") else f"{v}{rel}{rhs}"


def text(rng: random.Random) -> str:
    word = rng.choice(WORDS)
    return rng.choice([f"\\text{{{word} }}", f"\\text{{ {word} }}", f"\\text{{{word}}}", f"\\text{{{word}}}"])


def statement(rng: random.Random) -> str:
    """One formula: an equation or chain, a limit or sum, a set, a list, a map, prose, a system."""
    r = rng.random()
    if r < 0.38:
        tex = f"{expr(rng)}{relation(rng)}{expr(rng)}"
        if rng.random() < 0.2:  # chains: a = b = c
            tex += f"{relation(rng)}{expr(rng, terms=rng.randint(1, 2))}"
        return tex
    if r < 0.54:
        return f"{big_operator(rng)}{relation(rng)}{expr(rng, terms=rng.randint(1, 2))}"
    if r < 0.6:
        v, s = rng.choice(VARS + UPPER), rng.choice(SETS)
        rel = rng.choice(["\\in", "\\notin", "\\subseteq", "\\subset", "\\forall x \\in"])
        return f"{v} {rel} {s}{rng.choice(['', '', '^n', '^2'])}"
    if r < 0.66:
        v = rng.choice(VARS[:5])
        sep, dots = rng.choice([(",", "\\ldots"), ("+", "\\cdots"), (",", "\\dots"), (", ", "\\ldots")])
        items = [f"{v}_1", f"{v}_2", dots, f"{v}_{rng.choice(['n', 'k', '{n+1}'])}"]
        if rng.random() < 0.3:  # u_1,\\ldots,u_n and E_k\\cdots E_2E_1
            return sep.join([f"{v}_1", dots, f"{v}_n"]) if rng.random() < 0.5 else "E_k\\cdots E_2E_1"
        tex = sep.join(items)
        return f"({tex}) = ({rng.choice(['1', '0'])}, 0, \\ldots, 0)" if rng.random() < 0.2 else tex
    if r < 0.71:
        f, a, b = rng.choice(["f", "g", "T", "S"]), rng.choice(SETS), rng.choice(SETS)
        return rng.choice([f"{f}:{a}\\to {b}", f"{f} \\colon {a} \\to {b}", f"x \\mapsto {expr(rng, 1)}"])
    if r < 0.75:
        return big_operator(rng)
    if r < 0.8:
        return sequence(rng)
    if r < 0.92:
        return prose(rng)
    return system(rng)


def prose(rng: random.Random) -> str:
    """Formulas with words and spacing, as textbooks write them."""
    r = rng.random()
    if r < 0.3:  # f(x) = x^2 \quad \text{for } x > 0
        space = rng.choice(["\\quad", "\\qquad", ",\\quad", "\\;", ",\\ "])
        return f"{expr(rng, terms=1)}={expr(rng, terms=rng.randint(1, 2))} {space} {text(rng)}{condition(rng)}"
    if r < 0.55:
        return cases(rng)
    if r < 0.7:  # a \implies b
        arrow = rng.choice(["\\implies", "\\iff", "\\Rightarrow", "\\Leftrightarrow", "\\Longrightarrow"])
        return f"{condition(rng)} {arrow} {condition(rng)}"
    if r < 0.85:  # set-builder notation
        v, s = rng.choice(VARS), rng.choice(SETS)
        bar = rng.choice(["\\mid", "|", ":"])
        return f"\\{{{v}\\in {s} {bar} {condition(rng)}\\}}"
    return f"{expr(rng, terms=rng.randint(1, 2))} {rng.choice(SPACES)} {text(rng)}"


def cases(rng: random.Random) -> str:
    f, v = rng.choice(["f", "g", "h", "u"]), rng.choice(["x", "t"])
    rows = []
    for i in range(rng.choice([2, 2, 3])):
        value = expr(rng, 1, terms=rng.randint(1, 2))
        if i > 0 and rng.random() < 0.3:
            rows.append(f"{value} & \\text{{otherwise}}")
            break
        rows.append(f"{value} & {text(rng)}{condition(rng)}" if rng.random() < 0.7 else f"{value} & {condition(rng)}")
    return f"{f}({v}) = \\begin{{cases}} {LINE_BREAK.join(rows)} \\end{{cases}}"


def system(rng: random.Random) -> str:
    """Systems of equations and aligned chains in ``array`` (tex2typst writes them as mat(delim: #none, ...))."""
    n = rng.choice([2, 2, 3])
    v1, v2 = rng.sample(["x", "y", "z", "w", "u", "v"], 2)
    if rng.random() < 0.5:  # one column: whole equations
        rows = [f"{rng.randint(1, 9)}{v1} {rng.choice('+-')} {rng.randint(1, 9)}{v2} = {rng.randint(0, 9)}"
                for _ in range(n)]
        rows = [row + rng.choice([",", ",", "."]) for row in rows]
        return f"\\begin{{array}}{{{rng.choice('clr')}}} {LINE_BREAK.join(rows)} \\end{{array}}"
    rows = [f"{expr(rng, 1, terms=rng.randint(1, 2))} &=& {expr(rng, 1, terms=1)}" for _ in range(n)]
    return f"\\begin{{array}}{{rcl}} {LINE_BREAK.join(rows)} \\end{{array}}"


def sequence(rng: random.Random) -> str:
    """Lists as textbooks write them: (1,1,0,\\ldots), 0,\\ 1,\\ 2, and {1,\\ldots,k}."""
    items = [str(rng.randint(0, 30)) if rng.random() < 0.6 else rng.choice(VARS) for _ in range(rng.randint(3, 7))]
    sep = rng.choice([",", ", ", ",\\ ", ",~"])
    tex = sep.join(items) + (f"{sep}\\ldots" if rng.random() < 0.6 else "")
    left, right = rng.choice([("(", ")"), ("\\{", "\\}"), ("\\left\\{", "\\right\\}"), ("", ""), ("[", "]")])
    head = rng.choice(["", "", f"{rng.choice(VARS)} = ", f"{rng.choice(VARS)}\\in "])
    return f"{head}{left}{tex}{right}"


def formula(rng: random.Random) -> str:
    """A displayed formula with what surrounds it: \\displaystyle, and the sentence's full stop or comma."""
    tex = statement(rng) if rng.random() < 0.75 else expr(rng, terms=rng.choice([1, 1, 2]))
    if rng.random() < 0.05:
        tex = f"\\displaystyle {tex}"
    if rng.random() < 0.15:
        tex += rng.choice([".", ".", ",", ",", ";"])
    return tex
