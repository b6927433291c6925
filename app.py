"""Two-Sentence Horror: the Gradio app (a Hugging Face Space). Layout and event wiring only;
what the buttons do lives in horror.webapp, horror.chain and horror.storyteller.

    python app.py                      # the bundled model on http://127.0.0.1:7860
    HORROR_MODEL=user/repo python app.py   # a Hub repo (or a folder); the bundled model if it fails
"""

import functools
import inspect
import logging
import os
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from horror import webapp
from horror.chain import MAX_SENTENCE_CHARS, Chain
from horror.config import MAX_NEW_TOKENS_LIMIT
from horror.storyteller import MAX_PROMPT_CHARS, GenerationError, StoryTeller, set_cpu_threads
from horror.webapp import MAX_BEST_OF, RateLimiter, StoryService

logger = logging.getLogger("horror.app")
ASSETS = Path(__file__).resolve().parent / "assets"
LOSS_CURVES = ASSETS / "loss_curves.png"
CSS = (ASSETS / "app.css").read_text()
QUEUE_SIZE = int(os.environ.get("HORROR_QUEUE_SIZE", "64"))  # waiting requests beyond this are turned away
CONCURRENCY = int(os.environ.get("HORROR_CONCURRENCY", "2"))  # a Space has 2 vCPUs; the model runs one step at a time
TRUSTED_PROXIES = webapp.trusted_proxy_count()  # who may say, in X-Forwarded-For, who the caller is
SORRY = "Something went wrong on our side. Please try again in a moment."


def dark_theme() -> gr.themes.Base:
    """A red-on-charcoal theme that stays dark whatever the visitor's system prefers."""
    theme = gr.themes.Base(primary_hue="red", secondary_hue="orange", neutral_hue="zinc").set(
        body_background_fill_dark="#0b0b0d", block_background_fill_dark="#141417", button_primary_text_color="white")
    for name, value in list(vars(theme).items()):  # light mode gets the dark values too
        if name.endswith("_dark") and value is not None and not name.startswith("_"):
            setattr(theme, name[: -len("_dark")], value)
    return theme


def _gradio_error(error: Exception) -> gr.Error:
    # Toasts render HTML, so messages (which may quote user text) are escaped.
    if isinstance(error, gr.Error):
        return error
    if isinstance(error, (ValueError, GenerationError)):
        return gr.Error(webapp.escape_html(str(error)), print_exception=False)
    logger.error("unexpected error in a request", exc_info=error)
    return gr.Error(SORRY, print_exception=False)


def user_errors(handler: Callable) -> Callable:
    """Show a handler's ValueError/GenerationError messages; log anything else and apologise."""
    if inspect.isgeneratorfunction(handler):
        @functools.wraps(handler)
        def streaming(*args, **kwargs):
            try:
                yield from handler(*args, **kwargs)
            except Exception as error:
                raise _gradio_error(error) from None
        return streaming

    @functools.wraps(handler)
    def calling(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except Exception as error:
            raise _gradio_error(error) from None
    return calling


def warn_and_keep(handler: Callable) -> Callable:
    """For chain steps: a failure becomes a friendly warning and leaves every output as it was."""
    @functools.wraps(handler)
    def calling(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except Exception as error:
            gr.Warning(_gradio_error(error).message)
            return tuple(gr.skip() for _ in range(6))
    return calling


def client_of(request: gr.Request | None) -> str:
    """The caller's address, the key for rate limiting."""
    if request is None:
        return "local"
    host = request.client.host if getattr(request, "client", None) else None
    return webapp.client_address(dict(request.headers or {}), host, TRUSTED_PROXIES)


def build_demo(teller: StoryTeller, rate_limiter: RateLimiter | None = None) -> gr.Blocks:
    """The whole app around one loaded StoryTeller (tests pass a tiny one)."""
    service = StoryService(teller, rate_limiter or RateLimiter.from_env())
    info = teller.info()
    defaults = teller.generation_config
    banner = webapp.banner_html(info)

    # ----- handlers: Gradio values in, library calls, Gradio values out ---------------------------
    @user_errors
    def tell(prompt, best_of, temperature, top_k, top_p, min_p, repetition_penalty, max_new_tokens, seed,
             request: gr.Request):
        overrides = webapp.sampling_overrides(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                              repetition_penalty=repetition_penalty,
                                              max_new_tokens=max_new_tokens, seed=seed)
        yield from service.tell_views(prompt, best_of, overrides, client_of(request))

    def tell_again(prompt, best_of, temperature, top_k, top_p, min_p, repetition_penalty, max_new_tokens,
                   request: gr.Request):
        # The same prompt and settings with a fresh seed, whatever the seed box says.
        yield from tell(prompt, best_of, temperature, top_k, top_p, min_p, repetition_penalty, max_new_tokens,
                        None, request)

    @user_errors
    def random_prompt(model_written: bool, request: gr.Request) -> str:
        return service.random_prompt(model_written, client_of(request))

    def chain_outputs(chain: Chain, person_text=None) -> tuple:
        state, chain_view, status, text_file, markdown_file = service.chain_views(chain)
        return (state, chain_view, status, gr.DownloadButton(value=text_file, interactive=text_file is not None),
                gr.DownloadButton(value=markdown_file, interactive=markdown_file is not None),
                gr.skip() if person_text is None else person_text)

    @user_errors
    def add_person_sentence(state, text):
        chain, rest = webapp.person_turn(Chain.from_dict(state), text)
        if rest:
            gr.Info("One sentence per turn: the rest is waiting in the box for your next turn.", duration=5)
        return chain_outputs(chain, rest)

    @warn_and_keep
    def model_turn(state, request: gr.Request):
        return chain_outputs(service.model_turn(Chain.from_dict(state), {}, client_of(request)))

    @warn_and_keep
    def retry_model_turn(state, request: gr.Request):
        return chain_outputs(service.retry_model_turn(Chain.from_dict(state), {}, client_of(request)))

    @warn_and_keep
    def undo(state):
        return chain_outputs(Chain.from_dict(state).undo())

    @warn_and_keep
    def edit_sentence(state, number, text):
        return chain_outputs(Chain.from_dict(state).edit(int(number or 0) - 1, text))

    def sentence_at(state, number) -> str:
        sentences = Chain.from_dict(state).sentences
        return sentences[int(number) - 1] if number and 1 <= int(number) <= len(sentences) else ""

    # ----- API endpoints (typed: gradio_client and the API page read the hints) --------------------
    @user_errors
    def story(prompt: str = "", temperature: float | None = None, top_k: int | None = None,
              top_p: float | None = None, min_p: float | None = None, repetition_penalty: float | None = None,
              max_new_tokens: int | None = None, seed: int | None = None, request: gr.Request = None) -> dict:
        """A two-sentence horror story continuing `prompt` (empty: the model writes its own opening)."""
        overrides = webapp.sampling_overrides(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                              repetition_penalty=repetition_penalty,
                                              max_new_tokens=max_new_tokens, seed=seed)
        return service.story(prompt, overrides, client_of(request))

    @user_errors
    def chain_step(chain: list[str], temperature: float | None = None, seed: int | None = None,
                   request: gr.Request = None) -> str:
        """The model's next sentence after a story chain: a list of sentences (or of
        {"author", "sentence"} turns, or that as JSON)."""
        overrides = webapp.sampling_overrides(temperature=temperature, seed=seed)
        return service.chain_step(chain, overrides, client_of(request))

    @user_errors
    def score(text: str, prompt: str = "", request: gr.Request = None) -> dict:
        """How likely the model finds `text` (after `prompt`, if given): confidence, perplexity, bits per byte."""
        return service.score(text, prompt, client_of(request))

    # ----- layout ---------------------------------------------------------------------------------
    with gr.Blocks(title="Two-Sentence Horror", fill_width=True, delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# 🕯️ Two-Sentence Horror", elem_id="title")
        gr.Markdown("A small GPT, trained from scratch, writes a horror story in two sentences: "
                    "an ordinary setup, then the twist.", elem_id="tagline")
        gr.HTML(banner, visible=bool(banner), elem_id="banner")

        with gr.Tab("Tell me a story", id="story"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=5):
                    prompt = gr.Textbox(label="First sentence (optional)", lines=2, max_length=MAX_PROMPT_CHARS,
                                        placeholder="Leave it empty and the model writes its own opening…")
                    with gr.Row():
                        random_button = gr.Button("🎲 Random prompt")
                        model_written = gr.Checkbox(label="let the model write it", value=False)
                    with gr.Row():
                        generate = gr.Button("Generate", variant="primary", scale=2)
                        again = gr.Button("↻ Again", scale=1)
                    best_of = gr.Slider(1, MAX_BEST_OF, value=1, step=1, label="Best of N",
                                        info="1 streams one story; more writes N and ranks them by confidence")
                    with gr.Accordion("Advanced settings", open=False):
                        temperature = gr.Slider(0, max(2.0, defaults.temperature), value=defaults.temperature,
                                                step=0.05, label="Temperature", info="0 = always the likeliest word")
                        top_k = gr.Slider(0, max(200, defaults.top_k), value=defaults.top_k, step=1,
                                          label="Top-k", info="0 = off")
                        top_p = gr.Slider(0.05, 1.0, value=defaults.top_p, step=0.01, label="Top-p",
                                          info="1 = off")
                        min_p = gr.Slider(0, 0.5, value=defaults.min_p, step=0.01, label="Min-p", info="0 = off")
                        repetition_penalty = gr.Slider(0.5, max(2.0, defaults.repetition_penalty),
                                                       value=defaults.repetition_penalty, step=0.05,
                                                       label="Repetition penalty", info="1 = off")
                        max_new_tokens = gr.Slider(1, MAX_NEW_TOKENS_LIMIT, value=defaults.max_new_tokens, step=1,
                                                   label="Max new tokens")
                        seed = gr.Textbox(label="Seed", placeholder="blank = random", max_lines=1,
                                          value="" if defaults.seed is None else str(defaults.seed))
                with gr.Column(scale=6):
                    story_view = gr.HTML(webapp.story_html("", ""), elem_id="story-view", padding=False)
                    stats = gr.Markdown(elem_id="story-stats")
                    ranked = gr.HTML(elem_id="ranked", padding=False)
                    reuse_seed = gr.Button("📌 Reuse this story's seed", size="sm")
                    last_seed = gr.State(None)
            gr.Examples([[p] for p in service.example_prompts(10)], inputs=[prompt],
                        label="Try a first sentence", examples_per_page=10)

        with gr.Tab("Story chain", id="chain"):
            gr.Markdown("Take turns with the model, one sentence each. You can open, or let the model open; "
                        "it always answers with exactly one sentence.")
            chain_state = gr.State(None)
            chain_view = gr.HTML(webapp.chain_html(Chain()), elem_id="chain-view")
            chain_status = gr.Markdown(webapp.chain_status(Chain()), elem_id="chain-status")
            with gr.Row():
                person_text = gr.Textbox(label="Your sentence", placeholder="Write the next sentence and press Enter…",
                                         max_length=MAX_SENTENCE_CHARS, scale=5, elem_id="person-sentence")
                add = gr.Button("Add my sentence", variant="primary", scale=1, min_width=200)
            with gr.Row():
                model_button = gr.Button("🕯️ Model's turn")
                retry = gr.Button("🔁 Retry model")
                undo_button = gr.Button("↩️ Undo")
                reset = gr.Button("🗑️ Reset")
            with gr.Accordion("Edit a sentence", open=False):
                with gr.Row():
                    edit_number = gr.Number(label="Sentence number", precision=0, minimum=1, scale=1)
                    edit_text = gr.Textbox(label="New text", max_length=MAX_SENTENCE_CHARS, scale=4)
                    save_edit = gr.Button("Save edit", scale=1)
            with gr.Row():
                download_text = gr.DownloadButton("⬇️ Download as text", interactive=False)
                download_markdown = gr.DownloadButton("⬇️ Download as Markdown", interactive=False)

        with gr.Tab("About", id="about"):
            gr.Markdown(webapp.about_markdown(info))
            if LOSS_CURVES.is_file():
                gr.Image(str(LOSS_CURVES), label="Loss curves (training and validation)", interactive=False)
            else:
                gr.Markdown("*No loss curves yet: they appear here with a trained model.*")
            gr.Markdown(webapp.API_HELP)

        # ----- events (UI-only events are private: the API is /story, /chain_step and /score) ------
        story_inputs = [prompt, best_of, temperature, top_k, top_p, min_p, repetition_penalty, max_new_tokens, seed]
        story_outputs = [story_view, stats, ranked, last_seed]
        for trigger in (generate.click, prompt.submit):
            trigger(tell, story_inputs, story_outputs, api_visibility="private")
        again.click(tell_again, story_inputs[:-1], story_outputs, api_visibility="private")
        reuse_seed.click(lambda value: "" if value is None else str(value), last_seed, seed, api_visibility="private")
        random_button.click(random_prompt, model_written, prompt, api_visibility="private")

        chain_panel = [chain_state, chain_view, chain_status, download_text, download_markdown, person_text]
        for trigger in (add.click, person_text.submit):
            trigger(add_person_sentence, [chain_state, person_text], chain_panel, api_visibility="private").success(
                model_turn, chain_state, chain_panel, api_visibility="private")
        model_button.click(model_turn, chain_state, chain_panel, api_visibility="private")
        retry.click(retry_model_turn, chain_state, chain_panel, api_visibility="private")
        undo_button.click(undo, chain_state, chain_panel, api_visibility="private")
        reset.click(lambda: chain_outputs(Chain(), ""), None, chain_panel, api_visibility="private")
        save_edit.click(edit_sentence, [chain_state, edit_number, edit_text], chain_panel, api_visibility="private")
        edit_number.change(sentence_at, [chain_state, edit_number], edit_text, api_visibility="private")

        gr.api(story, api_name="story")
        gr.api(chain_step, api_name="chain_step")
        gr.api(score, api_name="score")

    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    return demo


def launch(demo: gr.Blocks, **options) -> tuple:
    """Serve `demo` with the app's theme and CSS (Gradio 6 takes these at launch, not in Blocks).
    show_error stays off: handlers turn every failure into a friendly gr.Error, never a traceback."""
    # Uvicorn believes X-Forwarded-For from any loopback peer by default, so a local caller could
    # name itself anything and dodge the rate limit; the app reads that header itself, trusting
    # only $HORROR_TRUSTED_PROXIES hops (see webapp.client_address).
    os.environ.setdefault("FORWARDED_ALLOW_IPS", "")
    return demo.launch(theme=dark_theme(), css=CSS, show_error=False, **options)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    set_cpu_threads()
    launch(build_demo(StoryTeller.load()), server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"))
