"""Conditions and values in flows: a small, safe expression language (simpleeval, never eval).

Names are the call's variables plus `caller`, `called`, `language`, `hour`, `weekday`
and `today`; an unset variable is None. Functions: open('hours'), holiday('JP'),
closed('hours'), len, int, str, lower, upper, startswith.
"""

from __future__ import annotations

import ast
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from simpleeval import EvalWithCompoundTypes, InvalidExpression

from ivr.hours import is_closed_day, is_open, public_holiday, supported_country, zone
from ivr.model import Flow

MAX_EXPRESSION_LENGTH = 500
"""Expressions are one-liners in YAML; a longer one is a mistake or an attack."""
BUILTIN_NAMES = ("caller", "called", "language", "hour", "weekday", "today", "true", "false")
FUNCTION_NAMES = ("open", "closed", "holiday", "len", "int", "str", "lower", "upper", "startswith")


class ExpressionError(ValueError):
    pass


class _Names(dict[str, Any]):
    """Unset variables read as None, so `vip == true` is simply false before it is set."""

    def __missing__(self, key: str) -> None:
        return None


@dataclass(frozen=True)
class Scope:
    flow: Flow
    variables: Mapping[str, Any]
    caller: str
    called: str
    language: str
    now: dt.datetime


def _functions(scope: Scope) -> dict[str, Callable[..., Any]]:
    local_now = scope.now.astimezone(zone(scope.flow.timezone))

    def hours_named(name: str) -> Any:
        try:
            return scope.flow.hours[name]
        except KeyError:
            raise ExpressionError(f"no hours named {name!r} in this flow") from None

    def holiday(country: str = "JP") -> bool:
        if not supported_country(str(country)):
            raise ExpressionError(f"no public holiday calendar for {country!r}")
        return public_holiday(str(country), local_now.date()) is not None

    return {
        "open": lambda name: is_open(hours_named(name), scope.now, scope.flow.timezone),
        "closed": lambda name: is_closed_day(hours_named(name), local_now.date()),
        "holiday": holiday,
        "len": len,
        "int": int,
        "str": str,
        "lower": lambda text: str(text).lower(),
        "upper": lambda text: str(text).upper(),
        "startswith": lambda text, prefix: str(text or "").startswith(prefix),
    }


def evaluate(expression: str, scope: Scope) -> Any:
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_EXPRESSION_LENGTH} characters")
    local_now = scope.now.astimezone(zone(scope.flow.timezone))
    names = _Names(scope.variables)
    names.update(
        caller=scope.caller,
        called=scope.called,
        language=scope.language,
        hour=local_now.hour,
        weekday=("mon", "tue", "wed", "thu", "fri", "sat", "sun")[local_now.weekday()],
        today=local_now.date().isoformat(),
        true=True,
        false=False,
    )
    evaluator = EvalWithCompoundTypes(names=names, functions=_functions(scope))
    try:
        return evaluator.eval(expression)
    except ExpressionError:
        raise
    except (
        InvalidExpression,
        SyntaxError,
        TypeError,
        ValueError,
        ArithmeticError,
        AttributeError,
        LookupError,
    ) as exc:
        raise ExpressionError(f"{expression!r}: {exc}") from None


def check_syntax(expression: str) -> list[str]:
    """Problems visible without running: syntax, unknown functions, hours names used."""
    if len(expression) > MAX_EXPRESSION_LENGTH:
        return [f"expression longer than {MAX_EXPRESSION_LENGTH} characters"]
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        return [f"expression {expression!r} does not parse: {exc.msg}"]
    problems = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id not in FUNCTION_NAMES
        ):
            problems.append(
                f"unknown function {node.func.id!r} (known: {', '.join(FUNCTION_NAMES)})"
            )
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            problems.append(f"{node.attr!r}: names starting with _ are not allowed")
    return problems


def _literal_arguments(expression: str, functions: tuple[str, ...]) -> list[str]:
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        return []
    used = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in functions
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            used.append(node.args[0].value)
    return used


def hours_used(expression: str) -> list[str]:
    """Literal names passed to open()/closed(), so the checker can verify they exist."""
    return _literal_arguments(expression, ("open", "closed"))


def holiday_countries_used(expression: str) -> list[str]:
    """Literal countries passed to holiday(), so the checker can verify there is a calendar."""
    return _literal_arguments(expression, ("holiday",))
