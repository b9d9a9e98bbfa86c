"""`multi`: OpenAI's MultiGrader, named graders combined by a `calculate_output` formula."""

from __future__ import annotations

import ast
import math
import operator
from typing import Literal

from pydantic import Field

from cluster.graders.base import GraderBase
from cluster.graders.registry import LEAVES, LeafGrader
from cluster.spec.base import Problem

# OpenAI's formula language: + - * / ^, and these functions.
FUNCTIONS = {"min": min, "max": max, "abs": abs, "floor": math.floor, "ceil": math.ceil, "exp": math.exp,
             "sqrt": math.sqrt, "log": math.log}  # fmt: skip
BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv, ast.Pow: operator.pow}


def parse(formula: str) -> ast.expr:
    """The formula as an expression tree (`^` is power); SyntaxError when it is not one."""
    return ast.parse(formula.replace("^", "**"), mode="eval").body


def evaluate(node: ast.expr, values: dict[str, float]) -> float:
    """The formula's value given each grader's score; ValueError for anything outside the formula language."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.Name):
        if node.id not in values:
            raise ValueError(f"'{node.id}' is not one of the graders ({', '.join(values)})")
        return values[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        return float(BINARY[type(node.op)](evaluate(node.left, values), evaluate(node.right, values)))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = evaluate(node.operand, values)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS and not node.keywords:
        return float(FUNCTIONS[node.func.id](*(evaluate(a, values) for a in node.args)))
    raise ValueError(f"'{ast.unparse(node)}' is not allowed (use numbers, grader names, + - * / ^, {', '.join(FUNCTIONS)})")


class Grader(GraderBase):
    """Scores each named grader, then computes `calculate_output` from their scores."""

    type: Literal["multi"] = Field(description="Always multi.")
    graders: dict[str, LeafGrader] = Field(min_length=1, description="The graders, by the name the formula uses.")
    calculate_output: str = Field(description="Formula over grader names, e.g. 0.5 * exact + 0.5 * fuzzy.")

    def templates(self) -> dict[str, str]:
        return {f"graders.{key}.{path}": text for key, g in self.graders.items() for path, text in g.templates().items()}

    def item_fields(self) -> set[str]:
        return {f for g in self.graders.values() for f in g.item_fields()}

    def problems(self) -> list[Problem]:
        out = [p.within(f"graders.{key}") for key, g in self.graders.items() for p in g.problems()]
        try:
            evaluate(parse(self.calculate_output), dict.fromkeys(self.graders, 1.0))
        except SyntaxError as e:
            out.append(Problem("calculate_output", f"is not a formula ({e.msg}).", "write e.g. 0.5 * a + 0.5 * b."))
        except ValueError as e:
            out.append(Problem("calculate_output", f"{e}.", "use only grader names, numbers, + - * / ^ and min/max/..."))
        except (ArithmeticError, TypeError):
            pass  # e.g. a division that is zero only when every score is 1; real scores decide
        return out


class MultiScorer:
    """Each grader's scorer, combined by the formula; close() closes those that hold a process."""

    def __init__(self, grader: Grader):
        self.formula = parse(grader.calculate_output)
        self.parts = {key: LEAVES[g.type].scorer(g) for key, g in grader.graders.items()}

    def __call__(self, sample: dict, item: dict) -> float:
        return evaluate(self.formula, {key: score(sample, item) for key, score in self.parts.items()})

    def close(self) -> None:
        for score in self.parts.values():
            getattr(score, "close", lambda: None)()


def scorer(grader: Grader) -> MultiScorer:
    """The grader as a callable (sample, item) -> float."""
    return MultiScorer(grader)
