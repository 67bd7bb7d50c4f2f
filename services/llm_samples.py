"""Writes the tiny llama-architecture GGUF sample LLMs (random weights, a real tokenizer), in milliseconds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import yaml
from gguf import GGUFWriter, PoolingType, TokenType

LLM_DEMO = "llm-demo"
LLM_DEMO_DRAFT = "llm-demo-draft"
CONTEXT_LENGTH = 1024  # room for a tool-calling prompt (the tools described) and a few calls
# ChatML: the markers are control tokens of the vocabulary, so a rendered chat tokenizes to them.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_SPACE = "\u2581"  # SentencePiece's word-boundary marker
_WORDS = (
    "the and of to a in is it you that he was for on are as with his they at be this have from or one had "
    "by word but not what all were we when your can said there use an each which she do how their if will "
    "up other about out many then them these so some her would make like him into time has look two more "
    "write go see number no way could people my than first water been call who its now find long down day "
    "did get come made may part hello world model token stream serve fast tiny llama"
).split()


@dataclass(frozen=True, slots=True)
class _Vocab:
    tokens: list[str]
    scores: list[float]
    types: list[int]

    def add(self, token: str, kind: TokenType, score: float = 0.0) -> None:
        self.tokens.append(token)
        self.scores.append(score)
        self.types.append(int(kind))


def _vocabulary() -> _Vocab:
    """SentencePiece-style: specials, all 256 byte-fallback tokens (so any text encodes), characters,
    and word pieces with every prefix present (SPM merges pairwise, so each step must be a token)."""
    vocab = _Vocab([], [], [])
    vocab.add("<unk>", TokenType.UNKNOWN)
    vocab.add("<s>", TokenType.CONTROL)
    vocab.add("</s>", TokenType.CONTROL)
    for byte in range(256):
        vocab.add(f"<0x{byte:02X}>", TokenType.BYTE)
    vocab.add("<|im_start|>", TokenType.CONTROL)
    vocab.add("<|im_end|>", TokenType.CONTROL)
    pieces = [_SPACE] + [chr(c) for c in range(0x21, 0x7F)]
    for word in _WORDS:
        marked = _SPACE + word
        pieces += [marked[:end] for end in range(2, len(marked) + 1)]
    for piece in dict.fromkeys(pieces):  # ordered and without repeats
        vocab.add(piece, TokenType.NORMAL, score=float(len(piece)))  # longer pieces win merges
    return vocab


Weights = npt.NDArray[np.float32]


def _normal(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> Weights:
    return rng.normal(0.0, std, shape).astype(np.float32)


def _write_gguf(path: Path, layers: int, name: str) -> None:
    """Random weights from one seed: target and draft share embeddings, output head and first layer, and
    the target's later layers are a small correction, so most of the draft's guesses are accepted."""
    vocab = _vocabulary()
    n_vocab, n_embd, n_ff, n_head = len(vocab.tokens), 64, 128, 4
    rng = np.random.default_rng(2024)
    embeddings = _normal(rng, (n_vocab, n_embd), 1.0)
    head = _normal(rng, (n_vocab, n_embd), 0.5)
    # Specials and byte tokens never win: random bytes would make invalid UTF-8, a random EOS ends early.
    head[np.array(vocab.types) != int(TokenType.NORMAL)] = 0.0
    writer = GGUFWriter(path, "llama")
    writer.add_name(name)
    writer.add_context_length(CONTEXT_LENGTH)
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(n_ff)
    writer.add_block_count(layers)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(0)  # all F32
    writer.add_pooling_type(PoolingType.MEAN)  # one vector per text when served for embeddings
    writer.add_tokenizer_model("llama")
    writer.add_token_list(vocab.tokens)
    writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(vocab.tokens.index("<|im_end|>"))
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    writer.add_tensor("token_embd.weight", embeddings)
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    writer.add_tensor("output.weight", head)
    for layer in range(layers):
        blk = f"blk.{layer}"
        std = 0.02 if layer == 0 else 0.002
        writer.add_tensor(f"{blk}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"{blk}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        for proj in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{blk}.{proj}.weight", _normal(rng, (n_embd, n_embd), std))
        writer.add_tensor(f"{blk}.ffn_gate.weight", _normal(rng, (n_ff, n_embd), std))
        writer.add_tensor(f"{blk}.ffn_up.weight", _normal(rng, (n_ff, n_embd), std))
        writer.add_tensor(f"{blk}.ffn_down.weight", _normal(rng, (n_embd, n_ff), std))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _write_model(model_dir: Path, files: dict[str, int], parameters: dict[str, object]) -> Path:
    """A model folder: config.yaml and version 1 holding each GGUF (file name -> layer count)."""
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    for file_name, layers in files.items():
        _write_gguf(model_dir / "1" / file_name, layers, model_dir.name)
    config = {"backend": "llama_cpp", "instance_count": 1, "parameters": parameters}
    (model_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return model_dir


def build_llm_demo(repository: Path) -> list[Path]:
    """`llm-demo` (2 layers, speculative decoding with its 1-layer draft) and `llm-demo-draft` alone.

    llm-demo keeps its own copy of the draft (a few hundred KB) so its folder is complete by itself."""
    base = {"model_file": "model.gguf", "n_ctx": CONTEXT_LENGTH, "n_threads": 1, "embedding": True}
    return [
        _write_model(
            repository / LLM_DEMO,
            {"model.gguf": 2, "draft.gguf": 1},
            {**base, "draft_model": "draft.gguf", "speculative_tokens": 4},
        ),
        _write_model(repository / LLM_DEMO_DRAFT, {"model.gguf": 1}, base),
    ]
