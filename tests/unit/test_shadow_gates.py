"""The shadow report's promotion gates: each one can hold a promotion back, and the report says which."""

from __future__ import annotations

from aisf.services.common.model_config import PromotionGates, ShadowConfig
from aisf.services.router.shadow import ShadowReport, _Tally, build_report


def _report(
    *, compared: int, agreed: int, errors: int = 0, live_ms: float = 1.0, shadow_ms: float = 1.0
) -> ShadowReport:
    config = ShadowConfig(version="2", promote=PromotionGates(min_compared=10, max_p99_ratio=2))
    tally = _Tally(offered=compared + errors, compared=compared, agreed=agreed)
    tally.errors["engine_unavailable"] = errors
    tally.live_ms.extend([live_ms] * compared)
    tally.shadow_ms.extend([shadow_ms] * compared)
    return build_report("m", ("m", "2"), config, tally, promoted=False)


def _failed(report: ShadowReport) -> set[str]:
    return {gate.name for gate in report.gates if not gate.passed}


def test_a_shadow_that_agrees_as_fast_as_live_is_promotable() -> None:
    report = _report(compared=20, agreed=20, live_ms=2.0, shadow_ms=3.0)
    assert report.promotable and not _failed(report)


def test_a_shadow_three_times_slower_than_live_fails_only_the_latency_gate() -> None:
    report = _report(compared=20, agreed=20, live_ms=1.0, shadow_ms=3.0)
    assert not report.promotable and _failed(report) == {"max_p99_ratio"}


def test_too_few_comparisons_disagreement_and_errors_each_hold_a_promotion_back() -> None:
    assert _failed(_report(compared=5, agreed=5)) == {"min_compared"}
    assert _failed(_report(compared=20, agreed=15)) == {"min_agreement"}
    assert _failed(_report(compared=20, agreed=20, errors=2)) == {"max_error_rate"}


def test_no_live_latency_yet_is_not_promotable() -> None:
    assert "max_p99_ratio" in _failed(_report(compared=0, agreed=0))
