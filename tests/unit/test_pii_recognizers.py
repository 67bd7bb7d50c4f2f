"""The PII analyzer (Presidio with aisf's recognizers) over the Korean/English corpus: precision and recall
per entity type, near-misses left alone, and redaction that leaves no labelled span behind."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aisf.services.pii.korean_numbers import PATTERNS, frn_check_digit_holds, rrn_check_digit_holds
from tests.support.pii_corpus import CORPUS, labelled_spans


def _with_check_digit(first12: str) -> str:
    weights = (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)
    check = (11 - sum(int(d) * w for d, w in zip(first12, weights, strict=True)) % 11) % 10
    return f"{first12[:6]}-{first12[6:]}{check}"


_birth = st.tuples(st.integers(0, 99), st.integers(1, 12), st.integers(1, 28)).map(
    lambda t: f"{t[0]:02d}{t[1]:02d}{t[2]:02d}"
)


@given(_birth, st.sampled_from("1234"), st.text("0123456789", min_size=5, max_size=5))
def test_every_rrn_with_a_holding_check_digit_scores_high(birth: str, gender: str, serial: str) -> None:
    number = _with_check_digit(birth + gender + serial)
    assert rrn_check_digit_holds(number)
    (rrn,) = [p for p in PATTERNS if p.entity == "KR_RRN"]
    assert [(s, e, score) for s, e, score in rrn.matches(f"번호 {number} 입니다")] == [(3, 17, 0.95)]


@given(_birth, st.sampled_from("1234"), st.text("0123456789", min_size=6, max_size=6))
def test_an_rrn_without_a_holding_check_digit_is_still_found(birth: str, gender: str, rest: str) -> None:
    """Numbers issued since October 2020 end in a random digit: the check raises the score, never gates."""
    (rrn,) = [p for p in PATTERNS if p.entity == "KR_RRN"]
    found = rrn.matches(f"{birth}-{gender}{rest}")
    assert len(found) == 1 and found[0][2] >= 0.6


def test_check_digits_of_known_numbers() -> None:
    assert rrn_check_digit_holds("900101-1234568") and not rrn_check_digit_holds("900101-1234567")
    assert frn_check_digit_holds("850315-5123450") and not frn_check_digit_holds("850315-5123456")
    assert not rrn_check_digit_holds("12345")


@given(st.text(max_size=60))
@settings(max_examples=300)
def test_patterns_never_raise_and_spans_stay_inside_the_text(text: str) -> None:
    for pattern in PATTERNS:
        for start, end, score in pattern.matches(text):
            assert 0 <= start < end <= len(text) and 0 < score <= 1


@pytest.fixture(scope="module")
def analyzer(tmp_path_factory: pytest.TempPathFactory) -> object:
    from aisf.services.pii.analyzer import PiiAnalyzer

    return PiiAnalyzer(Path(tmp_path_factory.mktemp("pii")))


def test_precision_and_recall_per_entity_type_on_the_corpus(analyzer: object) -> None:
    from aisf.services.pii.analyzer import PiiAnalyzer

    assert isinstance(analyzer, PiiAnalyzer)
    true, false_pos, false_neg = Counter[str](), Counter[str](), Counter[str]()
    for text, labels in CORPUS:
        expected = set(labelled_spans(text, labels))
        found = {(f.entity_type, f.start, f.end) for f in analyzer.detect(text)}
        for entity, *_ in expected & found:
            true[entity] += 1
        for entity, *_ in found - expected:
            false_pos[entity] += 1
        for entity, *_ in expected - found:
            false_neg[entity] += 1
    report = {
        entity: (
            true[entity] / max(1, true[entity] + false_pos[entity]),
            true[entity] / max(1, true[entity] + false_neg[entity]),
        )
        for entity in sorted(set(true) | set(false_pos) | set(false_neg))
    }
    print("precision / recall per entity:", {e: f"{p:.2f}/{r:.2f}" for e, (p, r) in report.items()})
    assert sum(false_pos.values()) == 0, false_pos
    assert sum(true.values()) / (sum(true.values()) + sum(false_neg.values())) >= 0.95, false_neg


def test_near_misses_stay_and_redaction_leaves_no_labelled_text(analyzer: object) -> None:
    from aisf.services.pii.analyzer import PiiAnalyzer

    assert isinstance(analyzer, PiiAnalyzer)
    for text, labels in CORPUS:
        redacted = analyzer.redact(text, analyzer.detect(text))
        if not labels:
            assert redacted == text
        for entity, substring in labels:
            assert substring not in redacted, (text, redacted)
            assert f"<{entity}>" in redacted or "<" in redacted


def test_entities_and_language_narrow_the_search(analyzer: object) -> None:
    from aisf.services.pii.analyzer import PiiAnalyzer

    assert isinstance(analyzer, PiiAnalyzer)
    text = "김민수 고객님 010-1234-5678"
    assert {f.entity_type for f in analyzer.detect(text, entities=("PHONE_NUMBER",))} == {"PHONE_NUMBER"}
    assert {f.entity_type for f in analyzer.detect(text)} == {"PERSON", "PHONE_NUMBER"}


def test_overlapping_findings_become_one_placeholder_named_by_the_higher_score() -> None:
    from aisf.services.pii.analyzer import Found, PiiAnalyzer

    text = "call 010-1234-5678 now"
    found = [
        Found("KR_BANK_ACCOUNT", 5, 18, 0.8),
        Found("PHONE_NUMBER", 5, 18, 0.9),
        Found("PERSON", 0, 7, 0.4),
    ]
    assert PiiAnalyzer.redact(text, found) == "<PHONE_NUMBER> now"
    assert PiiAnalyzer.redact(text, []) == text
    assert (
        PiiAnalyzer.redact("a b", [Found("PERSON", 2, 3, 0.9), Found("PERSON", 0, 1, 0.9)])
        == "<PERSON> <PERSON>"
    )


def test_unique_words_do_not_stay_in_spacys_vocabulary(analyzer: object) -> None:
    """Logs full of request ids must not grow a long-running role's memory."""
    from aisf.services.pii.analyzer import PiiAnalyzer

    assert isinstance(analyzer, PiiAnalyzer)
    vocabularies = [len(pipeline.vocab.strings) for pipeline in analyzer._pipelines]
    analyzer.detect_many([f"request req-{n:08x} failed for Jane Doe" for n in range(200)])
    assert [len(pipeline.vocab.strings) for pipeline in analyzer._pipelines] == vocabularies
