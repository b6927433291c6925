"""The byte-level BPE tokenizer: exact round-trips, special tokens, safe streaming deltas."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer, models

from horror.tokenizer import BOS, EOS, PAD, UNK, StoryTokenizer, iter_text_deltas

ORDINARY_TEXTS = [
    "My sister whispered at the door every night. But I live alone.",
    "He said \"don't open it\" and I didn't.",
    "She said “don’t” — it’s ‘fine’.",
    "naïve café résumé Zoë, ¿qué pasa? 日本語 עברית Ελληνικά",
    "The doll 😀 smiled 👻🕯️ at me 👨‍👩‍👧.",
    "  two leading spaces, a tab\there, a newline\nand trailing spaces  ",
    "",
]


@pytest.mark.parametrize("text", ORDINARY_TEXTS)
def test_ordinary_text_round_trips_exactly(tiny_tokenizer, text):
    assert tiny_tokenizer.decode(tiny_tokenizer.encode(text)) == text


def test_nfkc_folds_compatibility_characters(tiny_tokenizer):
    # By design (NFKC normaliser): the ellipsis character and ligatures become their plain forms.
    assert tiny_tokenizer.decode(tiny_tokenizer.encode("Wait… ﬁne")) == "Wait... fine"


def test_special_tokens_are_distinct_and_wrap_a_story(tiny_tokenizer):
    ids = {tiny_tokenizer.pad_id, tiny_tokenizer.bos_id, tiny_tokenizer.eos_id, tiny_tokenizer.unk_id}
    assert len(ids) == 4
    story = tiny_tokenizer.encode_story("It knocked.")
    assert story[0] == tiny_tokenizer.bos_id and story[-1] == tiny_tokenizer.eos_id
    assert tiny_tokenizer.decode(story) == "It knocked."  # specials are dropped on decode


def test_text_spelling_a_special_token_is_encoded_as_plain_text(tiny_tokenizer):
    ids = tiny_tokenizer.encode(f"a {EOS} b {BOS}")
    assert not set(ids) & tiny_tokenizer.special_ids
    assert tiny_tokenizer.decode(ids) == "a <EOS> b <BOS>"


def test_encode_batch_matches_encode(tiny_tokenizer):
    texts = ORDINARY_TEXTS[:4]
    assert tiny_tokenizer.encode_batch(texts) == [tiny_tokenizer.encode(t) for t in texts]


def test_save_and_load_give_the_same_encoding(tmp_path, tiny_tokenizer):
    tiny_tokenizer.save(tmp_path)
    loaded = StoryTokenizer.load(tmp_path / "tokenizer.json")
    assert loaded.vocab_size == tiny_tokenizer.vocab_size
    assert loaded.encode(ORDINARY_TEXTS[3]) == tiny_tokenizer.encode(ORDINARY_TEXTS[3])
    assert StoryTokenizer.load(tmp_path).bos_id == tiny_tokenizer.bos_id  # a folder works too


def test_a_tokenizer_without_our_special_tokens_is_refused():
    bare = Tokenizer(models.BPE())
    with pytest.raises(ValueError, match="special tokens"):
        StoryTokenizer(bare)


def test_an_unreadable_tokenizer_file_is_a_value_error(tmp_path):
    (tmp_path / "tokenizer.json").write_text(json.dumps({"not": "a tokenizer"}))
    with pytest.raises(ValueError, match="could not read tokenizer"):
        StoryTokenizer.load(tmp_path)


def test_training_refuses_a_vocabulary_smaller_than_the_bytes():
    with pytest.raises(ValueError, match="at least 300"):
        StoryTokenizer.train(["a story"], vocab_size=100)


def test_trained_vocabulary_starts_with_the_specials(tiny_tokenizer):
    assert [tiny_tokenizer.tokenizer.token_to_id(t) for t in (PAD, BOS, EOS, UNK)] == [0, 1, 2, 3]


def test_text_deltas_never_split_a_multi_byte_character(tiny_tokenizer):
    text = "😀👻 café 日本語 “boo”"
    ids = tiny_tokenizer.encode(text)
    assert len(ids) > len(text) // 2  # rare characters really are split into byte tokens
    deltas = list(iter_text_deltas(tiny_tokenizer, ids))
    assert "\ufffd" not in "".join(deltas)
    assert "".join(deltas) == text
