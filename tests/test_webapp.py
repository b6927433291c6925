"""The app's logic without Gradio: rate limiting, input parsing, escaping, formatting, the service."""

from __future__ import annotations

import json

import pytest

from horror.chain import Chain, Turn
from horror.storyteller import GenerationError, Story
from horror.webapp import (
    RateLimiter,
    RateLimitExceeded,
    StoryService,
    about_markdown,
    banner_html,
    chain_html,
    chain_status,
    client_address,
    parse_chain_sentences,
    parse_seed,
    person_turn,
    ranked_html,
    sampling_overrides,
    story_html,
    story_stats,
    trusted_proxy_count,
)

XSS = '<img src=x onerror="alert(1)">'


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_story(text: str = "A knock. Nobody there.", confidence: float = 0.5, seed: int = 7) -> Story:
    return Story("A knock.", text, text[len("A knock. "):], confidence, 12, 0.3, seed, "sentences")


# ----- rate limiting ------------------------------------------------------------------------------
def test_the_bucket_allows_a_burst_then_refuses_with_the_wait():
    limiter = RateLimiter(per_minute=60, burst=3, clock=FakeClock())
    for _ in range(3):
        limiter.check("1.2.3.4")
    with pytest.raises(RateLimitExceeded, match=r"wait 1 s"):
        limiter.check("1.2.3.4")


def test_the_bucket_refills_over_time_and_clients_are_separate():
    clock = FakeClock()
    limiter = RateLimiter(per_minute=30, burst=1, clock=clock)
    limiter.check("a")
    limiter.check("b")  # another client has its own bucket
    with pytest.raises(RateLimitExceeded):
        limiter.check("a")
    clock.now += 2.0  # 30 a minute: one every 2 s
    limiter.check("a")


def test_a_refused_request_does_not_spend_anything():
    clock = FakeClock()
    limiter = RateLimiter(per_minute=60, burst=1, clock=clock)
    limiter.check("a")
    for _ in range(5):
        with pytest.raises(RateLimitExceeded):
            limiter.check("a")
    clock.now += 1.0
    limiter.check("a")


def test_rate_zero_turns_limiting_off():
    limiter = RateLimiter(per_minute=0, burst=1)
    assert not limiter.enabled
    for _ in range(100):
        limiter.check("a")


def test_limits_come_from_the_environment():
    limiter = RateLimiter.from_env({"HORROR_RATE_LIMIT_PER_MINUTE": "6", "HORROR_RATE_LIMIT_BURST": "2"})
    assert (limiter.per_minute, limiter.burst) == (6.0, 2)
    with pytest.raises(ValueError, match="HORROR_RATE_LIMIT"):
        RateLimiter.from_env({"HORROR_RATE_LIMIT_PER_MINUTE": "lots"})


def test_memory_stays_bounded_with_many_clients():
    clock = FakeClock()
    limiter = RateLimiter(per_minute=60, burst=2, clock=clock, max_clients=50)
    for number in range(500):
        clock.now += 0.01
        limiter.check(f"client-{number}")
    assert len(limiter._buckets) <= 50


def test_client_address_trusts_only_the_entries_added_by_trusted_proxies():
    headers = {"X-Forwarded-For": "6.6.6.6, 9.9.9.9"}  # the caller forged 6.6.6.6; the Space's proxy added 9.9.9.9
    assert client_address(headers, "10.0.0.1", trusted_proxies=1) == "9.9.9.9"
    assert client_address(headers, "10.0.0.1", trusted_proxies=2) == "6.6.6.6"
    assert client_address(headers, "10.0.0.1", trusted_proxies=0) == "10.0.0.1"  # run locally: the socket
    assert client_address({}, "127.0.0.1", trusted_proxies=1) == "127.0.0.1"
    assert client_address({}, None) == "unknown"


def test_a_space_trusts_one_proxy_by_default():
    assert trusted_proxy_count({}) == 0 and trusted_proxy_count({"SPACE_ID": "me/horror"}) == 1
    assert trusted_proxy_count({"SPACE_ID": "me/horror", "HORROR_TRUSTED_PROXIES": "2"}) == 2
    with pytest.raises(ValueError, match="HORROR_TRUSTED_PROXIES"):
        trusted_proxy_count({"HORROR_TRUSTED_PROXIES": "yes"})


# ----- inputs -------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, seed", [("", None), ("  ", None), (None, None), ("42", 42), (7, 7), (3.0, 3)])
def test_parse_seed(value, seed):
    assert parse_seed(value) == seed


@pytest.mark.parametrize("value", ["abc", "-1", 1.5, "1e400", float("inf"), float("nan"), 2**64])
def test_parse_seed_refuses_non_seeds_clearly(value):
    with pytest.raises(ValueError, match="seed must be a whole number"):
        parse_seed(value)


def test_sampling_overrides_drop_blanks_and_parse_the_seed():
    assert sampling_overrides(temperature=0.7, top_k=None, seed="12") == {"temperature": 0.7, "seed": 12}
    with pytest.raises(ValueError, match="unknown setting"):
        sampling_overrides(temprature=1.0)


@pytest.mark.parametrize("value", [
    ["A knock.", "Silence."],
    ["A knock.", "  ", "Silence."],
    '["A knock.", "Silence."]',
    [{"author": "person", "sentence": "A knock."}, {"author": "model", "sentence": "Silence."}],
    {"turns": [{"author": "person", "sentence": "A knock."}, {"author": "model", "sentence": "Silence."}]},
    json.dumps({"turns": [{"author": "person", "sentence": "A knock."}, {"author": "model", "sentence": "Silence."}]}),
])
def test_chain_input_comes_as_sentences_turns_or_json(value):
    assert parse_chain_sentences(value) == ["A knock.", "Silence."]


@pytest.mark.parametrize("value, message", [
    (42, "list of sentences"),
    ("[not json", "not valid JSON"),
    ([1, 2], "text"),
    (["x" * 2000], "limit"),
    (["A."] * 500, "at most"),
])
def test_bad_chain_input_is_refused_clearly(value, message):
    with pytest.raises(ValueError, match=message):
        parse_chain_sentences(value)


def test_person_turn_keeps_one_sentence_and_hands_back_the_rest():
    chain, rest = person_turn(Chain(), "The lake was calm. Too calm. Far too calm.")
    assert chain.sentences == ["The lake was calm."] and rest == "Too calm. Far too calm."


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


def test_story_stats_show_the_seed_for_reproducing():
    stats = story_stats(make_story(confidence=0.4234, seed=99))
    assert "42%" in stats and "`99`" in stats and "12 tokens" in stats


def test_ranked_html_lists_best_first_escaped():
    page = ranked_html([make_story(XSS, 0.9, 1), make_story("B. b.", 0.1, 2)])
    assert page.index("90%") < page.index("10%") and "<img" not in page
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
        "source": "user/horror_model", "source_kind": "hub", "revision": "abc123", "notice": None, "trained": True,
        "parameters": 4_200_000, "n_layers": 4, "d_model": 192, "n_heads": 6, "d_ff": 768, "context_length": 256,
        "vocab_size": 8192, "generation_config": {"temperature": 0.4, "top_k": 30},
        "card": {"val_loss": {"pretrain": 2.5123, "finetune": 2.1}, "tokens_seen": {"finetune": 1234567},
                 "data": {"finetune": {"sources": [{"source": "data/horror/"}], "train_stories": 5500}}},
    }
    about = about_markdown(info)
    assert "user/horror\\_model" in about and "abc123" in about and "4.20 M" in about
    assert "pretrain 2.512 nats/token; finetune 2.100 nats/token" in about
    assert "finetune: horror (5,500 training stories)" in about and "1,234,567" in about
    assert "untrained" not in about.lower()


def test_about_labels_an_untrained_model_and_survives_an_empty_card():
    about = about_markdown({"source": "bundled", "trained": False, "card": {"untrained": True}, "notice": "fell back"})
    assert "Untrained placeholder" in about and "fell back" in about and "—" in about


# ----- the service on the tiny model --------------------------------------------------------------
@pytest.fixture()
def service(tiny_teller, tmp_path) -> StoryService:
    return StoryService(tiny_teller, RateLimiter(per_minute=0), export_dir=tmp_path / "exports")


def test_tell_views_stream_then_finish_with_the_seed(service):
    views = list(service.tell_views("I heard a knock.", 1, {"seed": 5}, "me"))
    assert len(views) >= 2 and all(seed is None for *_, seed in views[:-1])
    final_html, stats, ranked, seed = views[-1]
    assert seed == 5 and "Confidence" in stats and ranked == "" and "I heard a knock." in final_html
    again_html, again_stats, _, again_seed = list(service.tell_views("I heard a knock.", 1, {"seed": 5}, "me"))[-1]
    # Reproducible (the stats line also holds the wall time, which is not)
    assert (again_html, again_seed) == (final_html, seed) and again_stats.split(" in ")[0] == stats.split(" in ")[0]


def test_tell_views_best_of_ranks_several(service):
    views = list(service.tell_views("I heard a knock.", 3, {}, "me"))
    assert len(views) == 1 and views[0][2].count("<li>") == 3
    with pytest.raises(ValueError, match="best of"):
        list(service.tell_views("x", 99, {}, "me"))


def test_the_model_turn_adds_one_sentence_and_retry_replaces_it(service):
    chain = service.model_turn(Chain().add_person_sentence("I heard a knock."), {"seed": 1}, "me")
    assert len(chain) == 2 and chain.last_author == "model"
    retried = service.retry_model_turn(chain, {"seed": 2}, "me")
    assert len(retried) == 2 and retried.sentences[0] == "I heard a knock."
    with pytest.raises(ValueError, match="nothing to retry"):
        service.retry_model_turn(chain.undo(), {}, "me")


def test_chain_step_works_past_the_models_window(service):
    sentences = [f"Sentence {n} was whispered at the door." for n in range(120)]  # far past 64 tokens
    assert service.chain_step(sentences, {"seed": 3}, "me")
    assert service.view_start(Chain.from_dict({"turns": [{"author": "person", "sentence": s}
                                                         for s in sentences]})) > 100


def test_chain_views_write_downloadable_exports(service):
    chain = Chain().add_person_sentence("A knock <b>.")
    state, page, status, text_file, markdown_file = service.chain_views(chain)
    assert Chain.from_dict(state) == chain and "&lt;b&gt;" in page and "model's turn" in status
    assert text_file.read_text() == "A knock <b>.\n" and "&lt;b&gt;" in markdown_file.read_text()
    assert service.chain_views(Chain())[3:] == (None, None)


def test_service_requests_are_rate_limited(tiny_teller):
    service = StoryService(tiny_teller, RateLimiter(per_minute=1, burst=2))
    service.score("A knock.", "", "me")
    service.story("", {"seed": 1}, "me")
    with pytest.raises(RateLimitExceeded):
        service.chain_step(["A knock."], {}, "me")
    service.score("A knock.", "", "someone else")


def test_a_failed_generation_raises_a_clear_error_and_changes_nothing(service, monkeypatch):
    def write_nothing(*args, **kwargs):
        raise GenerationError("the model wrote no sentence; try again or change the settings")
    monkeypatch.setattr(service.teller, "continue_chain", write_nothing)
    chain = Chain().add_person_sentence("A knock.")
    with pytest.raises(GenerationError, match="try again"):
        service.model_turn(chain, {}, "me")
    assert chain.sentences == ["A knock."]


def test_random_prompts_come_from_the_curated_list_or_the_model(service):
    assert service.random_prompt(False, "me") in service.teller.curated_prompts()
    assert isinstance(service.random_prompt(True, "me"), str)
    examples = service.example_prompts(10)
    assert len(examples) == 10 and len(set(examples)) == 10


def test_a_streamed_story_survives_each_step_running_on_another_thread(tiny_teller):
    # Gradio resumes a streaming handler on whichever worker thread is free; inference mode is
    # per thread, so a stream that entered it only once failed on the second step.
    import threading

    steps = tiny_teller.stream("I heard a knock.", seed=5, stop_after_sentences=5, max_new_tokens=20)
    items: list = []
    errors: list = []

    def one_step() -> None:
        try:
            items.append(next(steps, None))
        except Exception as error:  # noqa: BLE001 - reported by the assert below
            errors.append(error)

    while not errors and (not items or items[-1] is not None):
        worker = threading.Thread(target=one_step)
        worker.start()
        worker.join()
    assert errors == [] and isinstance(items[-2], Story)
