"""The sample LLMs: tiny llama GGUFs with a byte-fallback vocabulary and a chat template, written fast."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from gguf import GGUFReader, TokenType
from llama_cpp import Llama

from aisf.services.common.model_config import load_model_config
from aisf.services.llm_samples import CHAT_TEMPLATE, LLM_DEMO, LLM_DEMO_DRAFT, build_llm_demo

UNKNOWN_TOKEN = 0  # <unk>: with byte fallback no text should need it


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("llm-samples")
    build_llm_demo(root)
    return root


def _string(reader: GGUFReader, key: str) -> str:
    field = reader.get_field(key)
    assert field is not None, key
    return str(field.contents())


def test_build_writes_both_models_small_and_in_well_under_a_second(tmp_path: Path) -> None:
    started = time.perf_counter()
    folders = build_llm_demo(tmp_path)
    elapsed = time.perf_counter() - started
    assert [f.name for f in folders] == [LLM_DEMO, LLM_DEMO_DRAFT]
    assert elapsed < 1.0
    for gguf in tmp_path.rglob("*.gguf"):
        assert 100_000 < gguf.stat().st_size < 2_000_000, gguf


def test_llm_demo_config_names_its_draft_model_which_sits_beside_it(repository: Path) -> None:
    config = load_model_config(repository / LLM_DEMO)
    assert config.backend == "llama_cpp"
    draft = str(config.parameters["draft_model"])
    assert (repository / LLM_DEMO / "1" / draft).is_file()
    assert int(config.parameters["speculative_tokens"]) > 0
    assert "draft_model" not in load_model_config(repository / LLM_DEMO_DRAFT).parameters


def test_gguf_is_llama_with_a_chat_template_and_every_byte_fallback_token(repository: Path) -> None:
    reader = GGUFReader(repository / LLM_DEMO / "1" / "model.gguf")
    assert _string(reader, "general.architecture") == "llama"
    assert _string(reader, "tokenizer.ggml.model") == "llama"
    assert _string(reader, "tokenizer.chat_template") == CHAT_TEMPLATE
    tokens_field, types_field = (
        reader.get_field("tokenizer.ggml.tokens"),
        reader.get_field("tokenizer.ggml.token_type"),
    )
    assert tokens_field is not None and types_field is not None
    types = dict(zip(tokens_field.contents(), types_field.contents(), strict=True))
    assert all(types[f"<0x{b:02X}>"] == TokenType.BYTE for b in range(256))
    assert types["<|im_end|>"] == TokenType.CONTROL


def test_draft_shares_the_vocabulary_of_the_target(repository: Path) -> None:
    target = GGUFReader(repository / LLM_DEMO / "1" / "model.gguf").get_field("tokenizer.ggml.tokens")
    draft = GGUFReader(repository / LLM_DEMO_DRAFT / "1" / "model.gguf").get_field("tokenizer.ggml.tokens")
    assert target is not None and draft is not None
    assert target.contents() == draft.contents()


@pytest.mark.parametrize(
    "text", ["hello world", "Ünïcødé, 漢字 and ☃ — byte fallback", "\x00\x7f tabs\tand\nlines"]
)
def test_any_text_tokenizes_without_unknown_tokens_and_decodes_back_unchanged(
    repository: Path, text: str
) -> None:
    vocab = Llama(str(repository / LLM_DEMO / "1" / "model.gguf"), vocab_only=True, verbose=False)
    try:
        tokens = vocab.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        assert UNKNOWN_TOKEN not in tokens
        assert vocab.detokenize(tokens).decode("utf-8") == text
    finally:
        vocab.close()
