"""Story-chain state and operations: pure logic, no model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from horror.chain import MAX_SENTENCE_CHARS, MAX_TURNS, Chain, Turn, window_start
from horror.text import escape_markdown, finish_sentence, split_first_sentence


def words(sentence: str) -> int:
    return len(sentence.split())


def chain_of(*sentences: str) -> Chain:
    chain = Chain()
    for number, sentence in enumerate(sentences):
        chain = chain.add_model_sentence(sentence) if number % 2 else chain.add_person_sentence(sentence)
    return chain


# ----- adding turns ------------------------------------------------------------------------------
def test_turns_alternate_authors_and_keep_order():
    chain = Chain().add_person_sentence("I heard a knock.").add_model_sentence("It came from inside.")
    assert chain.turns == (Turn("person", "I heard a knock."), Turn("model", "It came from inside."))
    assert chain.sentences == ["I heard a knock.", "It came from inside."]
    assert chain.last_author == "model" and len(chain) == 2


def test_operations_return_new_chains_and_leave_the_old_one_alone():
    empty = Chain()
    one = empty.add_person_sentence("The lake was calm.")
    assert len(empty) == 0 and len(one) == 1
    with pytest.raises(AttributeError):
        one.turns = ()  # frozen


def test_person_text_is_cleaned_and_cut_to_its_first_sentence():
    chain = Chain().add_person_sentence("  The lake\n was   calm.\x00 Too calm.  ")
    assert chain.sentences == ["The lake was calm."]


def test_split_first_sentence_returns_the_rest():
    assert split_first_sentence("It rained. Then it stopped! Why?") == ("It rained.", "Then it stopped! Why?")
    assert split_first_sentence("No full stop here") == ("No full stop here", "")
    assert split_first_sentence("Mr. Hale waved. Nobody waved back.") == ("Mr. Hale waved.", "Nobody waved back.")


def test_a_sentence_without_closing_punctuation_gets_a_full_stop():
    assert Chain().add_person_sentence("The lights went out").sentences == ["The lights went out."]
    assert finish_sentence('She said "run!"') == 'She said "run!"'
    assert finish_sentence("Wait\u2026") == "Wait\u2026"


@pytest.mark.parametrize("text", ["", "   ", "\n\t", None])
def test_empty_person_text_is_refused_with_a_clear_message(text):
    with pytest.raises(ValueError, match="empty"):
        Chain().add_person_sentence(text)


def test_person_text_over_the_limit_is_refused_with_the_limit_named():
    with pytest.raises(ValueError, match=str(MAX_SENTENCE_CHARS)):
        Chain().add_person_sentence("a" * (MAX_SENTENCE_CHARS + 1))


def test_non_text_is_refused():
    with pytest.raises(ValueError, match="text"):
        Chain().add_person_sentence(42)  # type: ignore[arg-type]


def test_a_runaway_model_sentence_is_cut_at_a_word_not_refused():
    chain = Chain().add_model_sentence("word " * 400)
    assert len(chain.sentences[0]) <= MAX_SENTENCE_CHARS and chain.sentences[0].endswith("\u2026")


def test_the_chain_is_bounded():
    chain = Chain(tuple(Turn("person", f"Sentence {n}.") for n in range(MAX_TURNS)))
    assert chain.is_full
    with pytest.raises(ValueError, match="full"):
        chain.add_person_sentence("One more.")
    with pytest.raises(ValueError, match="full"):
        chain.add_model_sentence("One more.")


# ----- retry, undo, edit, reset ------------------------------------------------------------------
def test_retry_replaces_only_the_models_last_sentence():
    chain = chain_of("A knock.", "Then silence.")
    retried = chain.retry_last_model_sentence("Then a second knock.")
    assert retried.sentences == ["A knock.", "Then a second knock."] and retried.last_author == "model"


def test_retry_refuses_when_the_last_sentence_is_the_persons():
    with pytest.raises(ValueError, match="retry"):
        chain_of("A knock.").retry_last_model_sentence("Anything.")
    with pytest.raises(ValueError, match="retry"):
        Chain().retry_last_model_sentence("Anything.")


def test_undo_removes_the_last_turn_whoever_wrote_it():
    chain = chain_of("A knock.", "Then silence.", "I opened the door.")
    assert chain.undo().sentences == ["A knock.", "Then silence."]
    assert chain.undo().undo().undo().sentences == []
    with pytest.raises(ValueError, match="Nothing to undo"):
        Chain().undo()


def test_edit_replaces_one_sentence_and_keeps_its_author():
    chain = chain_of("A knock.", "Then silence.", "I opened the door.")
    edited = chain.edit(1, "Then a whisper")
    assert edited.sentences == ["A knock.", "Then a whisper.", "I opened the door."]
    assert [t.author for t in edited.turns] == [t.author for t in chain.turns]


@pytest.mark.parametrize("index", [-1, 3, 99, True, "1", 1.0])
def test_edit_refuses_a_sentence_number_that_does_not_exist(index):
    with pytest.raises(ValueError, match="sentence number|pick one"):
        chain_of("A.", "B.", "C.").edit(index, "New.")


def test_edit_refuses_empty_text_and_empty_chains():
    with pytest.raises(ValueError, match="empty"):
        chain_of("A knock.").edit(0, "  ")
    with pytest.raises(ValueError, match="empty"):
        Chain().edit(0, "Anything.")


def test_reset_empties_the_chain():
    assert chain_of("A.", "B.").reset() == Chain()


# ----- the model's view ----------------------------------------------------------------------------
def test_model_view_keeps_the_newest_sentences_that_fit():
    sentences = chain_of("one two three.", "four five.", "six seven eight nine.", "ten.").sentences
    assert window_start(sentences, 100, words) == 0
    assert window_start(sentences, 5, words) == 2


def test_model_view_always_shows_the_last_sentence_even_if_it_is_too_long():
    sentences = chain_of("short.", "a much longer sentence than the budget allows.").sentences
    assert window_start(sentences, 2, words) == 1
    assert window_start([], 10, words) == 0


def test_a_long_chain_keeps_every_sentence_while_the_view_slides():
    chain = Chain()
    for number in range(150):
        chain = chain.add_person_sentence(f"Sentence number {number} was here.")
    view = chain.sentences[window_start(chain.sentences, 60, words) :]
    assert len(chain) == 150 and view[-1] == "Sentence number 149 was here." and len(view) == 12


# ----- export and serialisation --------------------------------------------------------------------
def test_export_text_is_the_story_as_one_paragraph():
    assert chain_of("A knock.", "Then silence.").export_text() == "A knock. Then silence.\n"
    assert Chain().export_text() == ""


def test_export_markdown_escapes_user_text():
    markdown = chain_of("# Not a *heading* <script>alert(1)</script>", "[link](http://x) | pipe").export_markdown()
    assert "<script>" not in markdown and "&lt;script&gt;" in markdown
    assert "\\[link\\]" in markdown and "\\*heading\\*" in markdown and "\\|" in markdown
    assert "1. **You:** \\# Not a" in markdown and "2. **Model:**" in markdown
    assert "\n\\# Not a" in markdown  # the paragraph cannot become a heading


@pytest.mark.parametrize(
    "text, escaped",
    [
        ("1. first", "1\\. first"),
        ("- item", "\\- item"),
        ("> quote", "&gt; quote"),
        ("a_b*c`d", "a\\_b\\*c\\`d"),
        ("&amp;", "&amp;amp;"),
        ("plain words.", "plain words."),
    ],
)
def test_escape_markdown(text, escaped):
    assert escape_markdown(text) == escaped


def test_round_trip_through_json():
    chain = chain_of("A knock.", "Then silence.", "I opened the door.")
    data = json.loads(json.dumps(chain.to_dict()))
    assert Chain.from_dict(data) == chain
    assert Chain.from_dict(None) == Chain()


@pytest.mark.parametrize(
    "data, message",
    [
        ([], "must be an object"),
        ({"turns": "nope"}, "must be an object"),
        ({"turns": [{"author": "ghost", "sentence": "Boo."}]}, "author"),
        ({"turns": [{"author": "model", "sentence": ""}]}, "empty"),
        ({"turns": [{"author": "model", "sentence": 5}]}, "text"),
        ({"turns": [{"author": "model", "sentence": "x" * (MAX_SENTENCE_CHARS + 1)}]}, "limit"),
        ({"turns": [{"author": "model", "sentence": "A."}] * (MAX_TURNS + 1)}, "at most"),
    ],
)
def test_from_dict_refuses_bad_data_with_a_clear_message(data, message):
    with pytest.raises(ValueError, match=message):
        Chain.from_dict(data)


def test_the_chain_and_the_text_rules_load_without_any_model_code():
    # chain.py is pure data: importing it (and text.py) must not pull in torch or the C decoder.
    code = "import sys, horror.chain, horror.text; print(sorted(m for m in ('torch', 'horror.native', 'horror.storyteller') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
