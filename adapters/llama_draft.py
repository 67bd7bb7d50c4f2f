"""llama.cpp instances: loaded without touching the process's output, with an optional draft model of the
same vocabulary that proposes the next tokens (speculative decoding)."""

from __future__ import annotations

import contextlib
import io
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
import numpy.typing as npt
from llama_cpp import Llama
from llama_cpp.llama_speculative import LlamaDraftModel

_log = logging.getLogger(__name__)
# Llama(verbose=False) would dup2 the process's stdout/stderr to /dev/null while a model loads, losing
# every other thread's output and racing with concurrent loads; instead it loads verbosely with Python's
# stderr captured, which is process-wide too, hence one construction at a time.
_CONSTRUCTION = threading.Lock()


def quiet_llama(path: Path, **kwargs: Any) -> Llama:
    with _CONSTRUCTION, contextlib.redirect_stderr(io.StringIO()) as chatter:
        llm = Llama(str(path), verbose=True, **kwargs)
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # its native-log filter
    llm.verbose = False
    _log.debug("llama.cpp loaded %s: %s", path.name, chatter.getvalue())
    return llm


class DraftModelProposer(LlamaDraftModel):
    """Plugs into `Llama(draft_model=...)`: the target verifies the proposals in one batch and keeps the
    longest prefix that matches its own sampling, so the output is what the target alone would produce.

    llama-cpp-python does not report acceptance, but the next call shows it: the verified tokens follow
    the previous prefix, and as many of them as match the previous proposal were accepted. A proposal is
    counted once it is settled: by the next call, or by `finish_sequence` for a generation's last one
    (counting it when made, and never crediting the last, biased the rate low)."""

    def __init__(self, draft: Llama, tokens: int) -> None:
        self.draft = draft
        self._tokens = tokens
        self._prefix: list[int] = []
        self._proposal: list[int] = []
        self.proposed = 0
        self.accepted = 0

    def start_sequence(self) -> None:
        """Forget the last proposal: a new generation never verifies it, even if its prompt extends it."""
        self._prefix, self._proposal = [], []

    def finish_sequence(self, ids: list[int]) -> None:
        """The generation ended with `ids` (prompt and every token sampled): settle its last proposal.
        Positions past the generation's end were never needed and count neither way."""
        self._settle(ids, ended=True)
        self.start_sequence()

    def __call__(self, input_ids: npt.NDArray[np.intc], /, **kwargs: Any) -> npt.NDArray[np.intc]:
        ids = [int(t) for t in input_ids]
        self._settle(ids, ended=False)
        budget = min(self._tokens, self.draft.n_ctx() - len(ids))
        proposal: list[int] = []
        if budget > 0:
            # Greedy: the draft's best guess is what the target most likely samples. generate() reuses
            # the draft's KV cache for the prefix it has already seen.
            tokens = self.draft.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0)
            try:
                for token in tokens:
                    proposal.append(token)
                    if len(proposal) == budget:
                        break
            finally:
                tokens.close()
        self._prefix, self._proposal = ids, proposal
        return np.array(proposal, dtype=np.intc)

    def _settle(self, ids: list[int], ended: bool) -> None:
        """Count the last proposal: its tokens up to the first the target sampled otherwise are accepted;
        mid-generation every proposed token was verified, at the end only those up to the end."""
        start = len(self._prefix)
        if not self._proposal or ids[:start] != self._prefix:
            return
        verified = ids[start : start + len(self._proposal)]
        matched = 0
        for kept, proposed in zip(verified, self._proposal, strict=False):
            if kept != proposed:
                break
            matched += 1
        self.accepted += matched
        if not ended:
            self.proposed += len(self._proposal)
        else:
            self.proposed += min(len(self._proposal), len(verified), matched + 1)


@dataclass
class LlamaInstance:
    """One llama.cpp context (not thread-safe: one generation at a time) and its draft model."""

    llm: Llama
    draft: DraftModelProposer | None
    generated: int = 0  # tokens sampled, written by the one engine thread using this instance

    @classmethod
    def build(
        cls, path: Path, draft: Path | None, speculative: int, embedding: bool, settings: dict[str, Any]
    ) -> LlamaInstance:
        """Blocking. `embedding` also makes it embed (mean-pooled), at the cost of all prompt logits."""
        proposer = DraftModelProposer(quiet_llama(draft, **settings), speculative) if draft else None
        if embedding:
            # Embedding mode makes llama.cpp output every position anyway; asking for it up front spares
            # an error log line per decode.
            pooled = {
                "embedding": True,
                "pooling_type": llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                "logits_all": True,
            }
            settings = {**settings, **pooled}
        return cls(quiet_llama(path, draft_model=proposer, **settings), proposer)

    def close(self) -> None:
        self.llm.close()
        if self.draft is not None:
            self.draft.draft.close()
