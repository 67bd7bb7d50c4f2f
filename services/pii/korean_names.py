"""Korean person names from a morphological analyser (kiwipiepy, offline): a proper noun of two to four
syllables that starts with a common surname, taken as a name when a title or honorific follows it
(김민수 고객님, 이영희 씨) or a word that asks for a name comes before it (성명: 박지훈). Without either it
stays: place and company names (강남구, 이천) look the same."""

from __future__ import annotations

import re
from typing import Any

SURNAMES = frozenset(
    "김이박최정강조윤장임한오서신권황안송류전홍고문양손배백허유남심노하곽성차주우구민진지엄채원천방공현함변염여추도소석선설마길연위표명기반왕금옥육인맹제모탁국어은편용예경봉사부가복태목형피두감호제음빈동온좌"
)
_HANGUL_NAME = re.compile(r"[가-힣]{2,4}")
_TITLES = frozenset(
    {
        "씨",
        "님",
        "고객",
        "선생",
        "대표",
        "과장",
        "부장",
        "차장",
        "대리",
        "사원",
        "교수",
        "박사",
        "기자",
        "원장",
        "팀장",
        "실장",
        "사장",
        "회장",
        "군",
        "양",
    }
)
_ASKING = ("성명", "이름", "담당자", "고객명", "환자", "수신인", "보호자", "name")
NAME_SCORE, BARE_SCORE = 0.85, 0.4


class KoreanNames:
    def __init__(self) -> None:
        from kiwipiepy import Kiwi

        self._kiwi: Any = Kiwi()

    def find(self, text: str) -> list[tuple[int, int, float]]:
        tokens = self._kiwi.tokenize(text)
        found = []
        for index, token in enumerate(tokens):
            if token.tag != "NNP":
                continue
            start, form = token.start, token.form
            previous = tokens[index - 1] if index else None
            if (
                previous is not None
                and previous.start + previous.len == start
                and len(previous.form) == 1
                and previous.form in SURNAMES
            ):
                start, form = previous.start, previous.form + form  # 박 + 지훈: the analyser split a name
            if not _HANGUL_NAME.fullmatch(form) or form[0] not in SURNAMES:
                continue
            following = tokens[index + 1].form if index + 1 < len(tokens) else ""
            before = text[max(0, start - 12) : start].lower()
            named = following in _TITLES or any(word in before for word in _ASKING)
            found.append((start, token.start + token.len, NAME_SCORE if named else BARE_SCORE))
        return found
