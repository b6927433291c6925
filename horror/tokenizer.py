"""The byte-level BPE tokenizer: train, save, load, encode a story, decode safely.

Built with Hugging Face `tokenizers` (NFKC normaliser, ByteLevel pre-tokenizer and decoder)
and saved as a single `tokenizer.json`, so any `tokenizers`/`transformers` user can load it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

PAD, BOS, EOS, UNK = "<PAD>", "<BOS>", "<EOS>", "<UNK>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]
# Starts a story chain (4-8 sentences, written in turns) where <BOS> starts a two-sentence story,
# so the model knows the story goes on past its twist. As a start token it is never a target the
# model is asked to sample. Optional: tokenizers trained before it existed lack it.
CHAIN = "<CHAIN>"


class StoryTokenizer:
    """A thin wrapper over `tokenizers.Tokenizer` that knows our special tokens."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
        missing = [token for token, index in ids.items() if index is None]
        if missing:
            raise ValueError(f"tokenizer lacks the special tokens {missing}; retrain it with horror.tokenizer")
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = (ids[t] for t in SPECIAL_TOKENS)
        self.chain_id: int | None = tokenizer.token_to_id(CHAIN)
        self.special_ids = frozenset(ids.values()) | ({self.chain_id} if self.chain_id is not None else set())
        # Text that merely spells "<EOS>" (in a prompt or a story) is text, not a control token.
        tokenizer.encode_special_tokens = True

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int = 20_000,
        min_frequency: int = 3,
    ) -> StoryTokenizer:
        """Train a byte-level BPE on an iterable of texts (stories)."""
        if vocab_size < 300:
            raise ValueError(f"vocab_size must be at least 300 (256 bytes + specials), got {vocab_size}")
        tokenizer = Tokenizer(models.BPE(unk_token=UNK))
        tokenizer.normalizer = normalizers.NFKC()
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=[*SPECIAL_TOKENS, CHAIN],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer=trainer)
        return cls(tokenizer)

    @classmethod
    def load(cls, path: str | Path) -> StoryTokenizer:
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        try:
            return cls(Tokenizer.from_file(str(path)))
        except Exception as error:  # tokenizers raises a bare Exception on bad JSON
            raise ValueError(f"could not read tokenizer {path}: {error}") from error

    def save(self, path: str | Path) -> None:
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        self.tokenizer.save(str(path))

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, with no special tokens added."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_story(self, text: str) -> list[int]:
        """A complete training example: <BOS> story <EOS>."""
        return [self.bos_id, *self.encode(text), self.eos_id]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`, special tokens dropped."""
        return self.tokenizer.decode([i for i in ids if i not in self.special_ids], skip_special_tokens=True)


def iter_text_deltas(tokenizer: StoryTokenizer, token_stream: Iterable[int]) -> Iterator[str]:
    """Turn a stream of token ids into text deltas, never splitting a multi-byte character.

    Byte-level BPE can emit half of a UTF-8 character; decoding it gives U+FFFD, so a delta
    that ends in one is held back until the next token completes the character.
    """
    ids: list[int] = []
    emitted = ""
    for token_id in token_stream:
        ids.append(token_id)
        text = tokenizer.decode(ids)
        if text.endswith("\ufffd"):
            continue
        if len(text) > len(emitted) and text.startswith(emitted):
            yield text[len(emitted) :]
            emitted = text
