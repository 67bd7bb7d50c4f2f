"""Just enough PromQL reading for tests: the metric names an expression reads, and Grafana's
variables replaced so Prometheus itself can run a dashboard's query."""

from __future__ import annotations

import re

# Words PromQL reserves besides function names (which are always followed by "(").
KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "atan2",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "bool",
        "inf",
        "nan",
    }
)

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_COMMENT = re.compile(r"#[^\n]*")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
# Not after a word character, a dot or "$": keeps the "m" of "5m", digits of "1e3" and Grafana
# variables out. The lookahead drops function and aggregation names.
_IDENTIFIER = re.compile(r"(?<![\w.$])[A-Za-z_:][\w:]*(?![\w:])(?!\s*\()")
_LABEL_VALUES = re.compile(r"^\s*label_values\((?:(.*),)?\s*(\w+)\s*\)\s*$", re.DOTALL)
_GRAFANA_INTERVAL = re.compile(
    r"\$(?:__rate_interval|__interval|__range)\b|\$\{(?:__rate_interval|__interval|__range)\}"
)
_GRAFANA_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def metric_names(expr: str) -> set[str]:
    """The metric names `expr` selects, e.g. `sum by (le) (rate(x_bucket{a="b"}[5m]))` -> {"x_bucket"}."""
    text = _STRING.sub('""', expr)
    text = _COMMENT.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name.lower() not in KEYWORDS}


def label_values_selector(query: str) -> str | None:
    """The series selector of a Grafana `label_values(selector, label)` variable query, or None when
    the query has none (`label_values(label)`) or is no label_values query."""
    match = _LABEL_VALUES.match(query)
    if match is None or match[1] is None:
        return None
    return match[1].strip()


def grafana_variables(expr: str) -> set[str]:
    """Names of the dashboard variables `expr` uses ($name, ${name}, ${name:format}, [[name]])."""
    found = {next(group for group in match.groups() if group) for match in _GRAFANA_VARIABLE.finditer(expr)}
    return {name for name in found if not name.startswith("__")}


def substitute_grafana(expr: str, interval: str = "1m", value: str = ".+") -> str:
    """`expr` as Prometheus could run it: Grafana's interval variables become `interval`, every other
    variable `value` (dashboards match variables with =~, so a regex stands for any choice)."""
    expr = _GRAFANA_INTERVAL.sub(interval, expr)
    return _GRAFANA_VARIABLE.sub(value, expr)
