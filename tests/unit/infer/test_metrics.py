import pytest

from lorakit.infer.metrics import chrf, exact_match, normalise, perplexity, typst_compile_rate, typst_math_compiles


def test_exact_match_ignores_whitespace_only():
    assert normalise("  a_1,\n a_2  ") == "a_1, a_2"
    assert exact_match(["a  +  b", "x/y", "sqrt(x)"], ["a + b", "x / y", "sqrt(x)"]) == pytest.approx(2 / 3)


def test_chrf_on_known_pairs():
    assert chrf(["sum_(i = 1)^n i"], ["sum_(i = 1)^n i"]) == pytest.approx(100.0)
    assert chrf(["abc"], ["xyz"]) == pytest.approx(0.0)
    partial = chrf(["a + b = c"], ["a + b = d"])
    assert 0 < partial < 100


def test_typst_compile_rate_tells_valid_math_from_broken():
    assert typst_math_compiles("sum_(n = 1)^n (s omega)/(n times u)")
    assert typst_math_compiles("bb(R)^n")
    assert not typst_math_compiles("frac(a")  # unclosed
    assert not typst_math_compiles("\\frac{a}{b}")  # LaTeX is not Typst
    assert not typst_math_compiles("   ")
    assert typst_compile_rate(["a/b", "frac(a", "x^2", "\\alpha"]) == pytest.approx(0.5)


def test_perplexity():
    assert perplexity(0.0) == 1.0 and perplexity(1.0) == pytest.approx(2.718281828)
