"""What the app shows: HTML and Markdown strings, user text always escaped."""

from __future__ import annotations

from horror.chain import Chain, Turn
from horror.storyteller import Story
from horror.views import (
    about_markdown,
    banner_html,
    chain_html,
    chain_status,
    ranked_html,
    story_html,
    story_panel,
    story_stats,
    tagline_markdown,
)

XSS = '<img src=x onerror="alert(1)">'


def make_story(text: str = "A knock. Nobody there.", confidence: float = 0.5, seed: int = 7) -> Story:
    return Story("A knock.", text, text[len("A knock. ") :], confidence, 12, 0.3, seed, "sentences")


# ----- formatting and escaping --------------------------------------------------------------------
def test_story_html_escapes_and_styles_setup_and_twist():
    page = story_html(XSS, XSS + " Then it smiled.")
    assert "<img" not in page and "&lt;img" in page
    assert '<span class="twist"> Then it smiled.</span>' in page


def test_story_html_splits_a_model_written_opening_at_its_first_sentence():
    page = story_html("", "The lake was calm. Too calm.")
    assert '<span class="setup">The lake was calm.</span><span class="twist"> Too calm.</span>' in page
    assert "cursor" in story_html("", "The lake", writing=True)
    assert "story-empty" in story_html("", "")


def test_story_stats_speak_plain_words_and_show_the_seed():
    stats = story_stats(make_story(confidence=0.4234, seed=99))
    assert "How sure:** 42%" in stats and "`99`" in stats and "stopped after the twist" in stats
    for jargon in ("Confidence", "tokens", "eos", "stopped by"):
        assert jargon not in stats
    assert "the model ended it there" in story_stats(Story("", "A. B.", "A. B.", 0.5, 3, 0.1, 1, "eos"))
    assert "only with the same N" not in stats and "with best of 4" in story_stats(make_story(), best_of=4)


def test_story_panel_shows_a_draft_writing_and_a_story_finished():
    draft = Story("A knock.", "A knock. Then", "Then", 0.0, 0, 0.0, 5, None)
    html, stats, ranked, seed = story_panel([draft])
    assert "cursor" in html and "writing" in stats and ranked == "" and seed is None
    html, stats, ranked, seed = story_panel([make_story(seed=3), make_story("A knock. Other.", 0.2, 3)])
    assert "cursor" not in html and "`3`" in stats and ranked.count("<li>") == 2 and seed == 3


def test_the_tagline_says_what_to_expect_honestly():
    line = tagline_markdown({"parameters": 3_400_000})
    assert "3.4M-parameter" in line and "from scratch" in line and "CPU" in line and "odd grammar" in line


def test_an_edited_model_sentence_is_labelled_as_edited():
    chain = Chain((Turn("person", "A knock."), Turn("model", "It smiled."))).edit(1, "It wept.")
    assert "Model, edited by you" in chain_html(chain) and "Model, edited by you" in chain.export_markdown()
    assert Chain.from_dict(chain.to_dict()) == chain


def test_ranked_html_lists_best_first_escaped():
    page = ranked_html([make_story(XSS, 0.9, 1), make_story("B. b.", 0.1, 2)])
    assert page.index("90%") < page.index("10%") and "<img" not in page
    # Folded (no `open`): the best story is already shown above the list.
    assert page.startswith('<details class="ranked"><summary>All 2 stories') and page.count("<li>") == 2
    assert ranked_html([make_story()]) == ""


def test_chain_html_escapes_numbers_and_dims_what_the_model_no_longer_sees():
    chain = Chain((Turn("person", XSS), Turn("model", "It smiled."), Turn("person", "I ran.")))
    page = chain_html(chain, view_start=1)
    assert "<img" not in page and "&lt;img" in page
    assert page.count('class="turn') == 3 and page.count("unseen") == 1
    assert "sees only sentences 2–3" in page
    assert "unseen" not in chain_html(chain, 0) and "No sentences yet" in chain_html(Chain())


def test_chain_status_says_whose_turn_it_is():
    assert "Your move" in chain_status(Chain())
    assert "model's turn" in chain_status(Chain((Turn("person", "A."),)))
    assert "your turn" in chain_status(Chain((Turn("model", "A."),)))


def test_banner_warns_about_fallback_and_untrained_models_escaped():
    assert banner_html({"notice": None, "trained": True}) == ""
    banner = banner_html({"notice": f"could not load {XSS}", "trained": False})
    assert "bundled model" in banner and "untrained" in banner and "<img" not in banner


def test_about_lists_card_facts():
    info = {
        "source": "user/horror_model",
        "source_kind": "hub",
        "revision": "abc123",
        "notice": None,
        "trained": True,
        "parameters": 4_200_000,
        "n_layers": 4,
        "d_model": 192,
        "n_heads": 6,
        "d_ff": 768,
        "context_length": 256,
        "vocab_size": 8192,
        "generation_config": {"temperature": 0.4, "top_k": 30, "seed": None, "best_of": 8},
        "card": {
            "val_loss": {"pretrain": 2.5123, "finetune": 2.1},
            "tokens_seen": {"finetune": 1234567},
            "data": {"finetune": {"sources": [{"source": "data/horror/"}], "train_stories": 5500}},
        },
    }
    about = about_markdown(info)
    assert "user/horror\\_model" in about and "abc123" in about and "4.20 M" in about
    assert "pretrain 2.512 nats/token; finetune 2.100 nats/token" in about
    assert "finetune: horror (5,500 training stories)" in about and "1,234,567" in about
    assert "| Default sampling | temperature 0.4, top k 30, best of 8 |" in about
    assert "untrained" not in about.lower()


def test_about_names_training_sources_by_their_labels_not_their_globs():
    sources = [
        {"source": "../shared/data/pretrain/adventure/[AG]*.txt.xz", "label": "alger-goldfrap"},
        {"source": "data/horror/"},
    ]
    about = about_markdown({"trained": True, "card": {"data": {"pretrain": {"sources": sources}}}})
    assert "pretrain: alger-goldfrap, horror" in about and "[AG]" not in about


def test_about_labels_an_untrained_model_and_survives_an_empty_card():
    about = about_markdown({"source": "bundled", "trained": False, "card": {"untrained": True}, "notice": "fell back"})
    assert "Untrained placeholder" in about and "fell back" in about and "—" in about


def test_about_says_what_to_expect_and_what_the_numbers_mean():
    info = {"parameters": 3_400_000, "trained": True}
    card = {
        "blind_read": {"stories": 60, "grammatical": 0.6, "coherent": 0.08},
        "bits_per_byte": 1.2496,
        "train_seconds": {"pretrain": 4007.1, "finetune": 715.3},
    }
    about = about_markdown({**info, "card": card})
    assert "3.4M parameters" in about and "2-core CPU" in about
    assert "60% were grammatical" in about and "8% had a setup and a twist" in about
    assert "1.250 bits/byte" in about and "79 minutes" in about
    assert "What the numbers mean" in about and "How sure" in about and "Seed" in about
    assert "blind read" not in about_markdown({**info, "card": {}})  # no figures, no claims
