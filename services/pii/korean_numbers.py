"""Korean identifiers as patterns: resident and foreigner registration numbers (with their check digits),
mobile and landline numbers, bank accounts and passports (these two only next to a word that says so:
alone they look like order numbers and product codes)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_RRN_WEIGHTS = (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)
# Not preceded or followed by what would make the digits part of a longer token.
_BEFORE = r"(?<![\w.+\-/])"
_AFTER = r"(?![\w\-/]|\.\d)"
_DATE = r"\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"


def _weighted(digits: str) -> int:
    return sum(int(d) * w for d, w in zip(digits[:12], _RRN_WEIGHTS, strict=True))


def rrn_check_digit_holds(number: str) -> bool:
    """A resident registration number's 13th digit, as issued until October 2020 (random since)."""
    digits = re.sub(r"\D", "", number)
    return len(digits) == 13 and (11 - _weighted(digits) % 11) % 10 == int(digits[12])


def frn_check_digit_holds(number: str) -> bool:
    """A foreigner registration number's 13th digit (the pre-2020 rule)."""
    digits = re.sub(r"\D", "", number)
    return len(digits) == 13 and (13 - _weighted(digits) % 11) % 10 == int(digits[12])


@dataclass(frozen=True, slots=True)
class KoreanPattern:
    entity: str
    pattern: re.Pattern[str]
    score: float
    """Score of a match; a holding check digit or a context word raises it."""
    checksum: Callable[[str], bool] | None = None
    context: tuple[str, ...] = ()
    """Words (matched inside Korean words too: 계좌번호는) that must come shortly before, if any."""
    context_required: bool = False
    context_window: int = 24

    def matches(self, text: str) -> list[tuple[int, int, float]]:
        found = []
        lowered = text.lower()
        for match in self.pattern.finditer(text):
            start, end = match.span("pii")
            score = self.score
            before = lowered[max(0, start - self.context_window) : start]
            near = any(word in before for word in self.context)
            if self.context_required and not near:
                continue
            if near and not self.context_required:
                score = min(1.0, score + 0.2)
            if self.checksum is not None and self.checksum(match["pii"]):
                score = max(score, 0.95)
            found.append((start, end, score))
        return found


PATTERNS = (
    KoreanPattern(
        "KR_RRN",
        re.compile(_BEFORE + rf"(?P<pii>{_DATE}[-\s]?[1-4]\d{{6}})" + _AFTER),
        0.6,
        rrn_check_digit_holds,
        ("주민", "rrn", "resident registration"),
    ),
    KoreanPattern(
        "KR_FRN",
        re.compile(_BEFORE + rf"(?P<pii>{_DATE}[-\s]?[5-8]\d{{6}})" + _AFTER),
        0.6,
        frn_check_digit_holds,
        ("외국인", "등록번호", "frn", "alien registration", "foreigner"),
    ),
    KoreanPattern(
        "PHONE_NUMBER",
        re.compile(
            _BEFORE
            + r"(?P<pii>(?:\+82[-.\s]?(?:\(0\))?|0)(?:1[016789]|2|[3-6][1-5]|70)"  # 01x, 02, 0xx, 070
            + r"\)?[-.\s]?\d{3,4}[-.\s]?\d{4})"
            + _AFTER
        ),
        0.7,
        None,
        ("전화", "연락처", "휴대폰", "핸드폰", "phone", "tel", "mobile", "call"),
    ),
    KoreanPattern(
        "KR_BANK_ACCOUNT",
        re.compile(_BEFORE + r"(?P<pii>\d{2,6}-\d{2,6}-\d{2,7}(?:-\d{1,3})?|\d{10,14})" + _AFTER),
        0.8,
        None,
        (
            "계좌",
            "입금",
            "은행",
            "국민",
            "신한",
            "우리",
            "하나",
            "농협",
            "기업",
            "카카오뱅크",
            "토스",
            "account",
            "acct",
            "bank",
        ),
        context_required=True,
    ),
    KoreanPattern(
        "KR_PASSPORT",
        re.compile(_BEFORE + r"(?P<pii>[MSRODG]\d{8}|[MSRODG]\d{3}[A-Z]\d{4})" + _AFTER),
        0.85,
        None,
        ("여권", "passport"),
        context_required=True,
    ),
)
