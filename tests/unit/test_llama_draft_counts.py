"""Speculative decoding's acceptance counts: a proposal counts once it is settled, including a
generation's last one (the landed main counted it as proposed and never credited it)."""

from __future__ import annotations

from typing import Any

import numpy as np

from aisf.adapters.llama_draft import DraftModelProposer


def _proposer(proposal: list[int], prefix: list[int]) -> DraftModelProposer:
    # The draft model is never asked here: the proposals are set as if it had made them.
    unused: Any = None
    proposer = DraftModelProposer(unused, tokens=len(proposal))
    proposer._prefix, proposer._proposal = prefix, proposal
    return proposer


def test_a_generation_whose_last_proposal_was_taken_whole_counts_it_all_accepted() -> None:
    proposer = _proposer([7, 8, 9], prefix=[1, 2])
    proposer.finish_sequence([1, 2, 7, 8, 9])
    assert (proposer.proposed, proposer.accepted) == (3, 3)


def test_a_rejected_token_counts_as_proposed_and_what_follows_it_at_the_end_does_not() -> None:
    proposer = _proposer([7, 8, 9], prefix=[1, 2])
    proposer.finish_sequence([1, 2, 7, 5])  # the target took 7, sampled 5 instead of 8, then ended
    assert (proposer.proposed, proposer.accepted) == (2, 1)


def test_positions_past_the_end_of_the_generation_count_neither_way() -> None:
    proposer = _proposer([7, 8, 9], prefix=[1, 2])
    proposer.finish_sequence([1, 2, 7])  # max_tokens reached after one token
    assert (proposer.proposed, proposer.accepted) == (1, 1)


def test_mid_generation_every_proposed_token_was_verified() -> None:
    proposer = _proposer([7, 8, 9], prefix=[1, 2])
    proposer._settle([1, 2, 7, 5], ended=False)
    assert (proposer.proposed, proposer.accepted) == (3, 1)


def test_a_finished_sequence_is_forgotten() -> None:
    proposer = _proposer([7], prefix=[1])
    proposer.finish_sequence([1, 7])
    proposer.finish_sequence([1, 7])
    assert (proposer.proposed, proposer.accepted) == (1, 1)
    assert np.array_equal(np.array(proposer._proposal), np.array([]))
