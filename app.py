"""Two-Sentence Horror: the Gradio app (a Hugging Face Space). Layout and event wiring only;
what the buttons do lives in horror.service, horror.chain and horror.views, and the Gradio helpers
(theme, error policy, API endpoints) in webui.py.

    python app.py                      # the bundled model on http://127.0.0.1:7860
    HORROR_MODEL=user/repo python app.py   # a Hub repo (or a folder); the bundled model if it fails
"""

import functools
import logging
import os
from pathlib import Path

import gradio as gr

from horror import views
from horror.chain import MAX_SENTENCE_CHARS, Chain
from horror.config import MAX_BEST_OF, MAX_NEW_TOKENS_LIMIT
from horror.exports import ChainExports
from horror.ratelimit import RateLimiter
from horror.service import StoryService, person_turn
from horror.share import share_query, shared_story
from horror.storyteller import StoryTeller, set_cpu_threads
from horror.text import MAX_PROMPT_CHARS, escape_html
from webui import add_api, client_of, dark_theme, sentence_index, setting, settings_from, warns

ASSETS = Path(__file__).resolve().parent / "assets"
LOSS_CURVES = ASSETS / "loss_curves.png"
CSS = (ASSETS / "app.css").read_text()
JS = (ASSETS / "app.js").read_text()
QUEUE_SIZE = int(os.environ.get("HORROR_QUEUE_SIZE", "64"))  # waiting requests beyond this are turned away
CONCURRENCY = int(os.environ.get("HORROR_CONCURRENCY", "2"))  # a Space has 2 vCPUs; the model runs one step at a time
# The chain is the person's own text kept in their own browser: the key only scrambles it there.
BROWSER_SECRET = os.environ.get("HORROR_BROWSER_SECRET", "two-sentence-horror")
# Runs in the browser before a story is told: scrolls to where the story appears (on a phone it is
# below the fold) and passes the inputs through unchanged.
SHOW_STORY = "(...inputs) => window.horror.showStory(inputs)"


def build_demo(
    teller: StoryTeller, rate_limiter: RateLimiter | None = None, exports: ChainExports | None = None
) -> gr.Blocks:
    """The whole app around one loaded StoryTeller (tests pass a tiny one)."""
    service = StoryService(teller, rate_limiter or RateLimiter.from_env())
    exports = exports or ChainExports()
    info = teller.info()
    defaults = teller.generation_config

    # ----- story tab ------------------------------------------------------------------------------
    @warns(outputs=5)
    def tell(
        prompt, best_of, temperature, top_k, top_p, min_p, repetition_penalty, max_new_tokens, seed, request: gr.Request
    ):
        overrides = settings_from(temperature, top_k, top_p, min_p, repetition_penalty, max_new_tokens, seed)
        for stories in service.tell(prompt, best_of, overrides, client=client_of(request)):
            panel = views.story_panel(stories)
            finished = stories[0].finish_reason is not None
            query = share_query(stories[0], len(stories), overrides, info) if finished else ""
            yield (*panel, query)

    def tell_again(
        prompt, best_of, temperature, top_k, top_p, min_p, repetition_penalty, max_new_tokens, request: gr.Request
    ):
        # The same prompt and settings with a fresh seed, whatever the seed box says.
        yield from tell(
            prompt, best_of, temperature, top_k, top_p, min_p, repetition_penalty, max_new_tokens, None, request
        )

    @warns(outputs=1)
    def random_prompt(model_written: bool, request: gr.Request) -> str:
        if model_written:
            return service.model_written_prompt(client=client_of(request))
        return service.random_prompt()

    @warns(outputs=10)
    def open_shared_story(request: gr.Request):
        """A shared link's settings, put into the boxes (the page then tells the story)."""
        shared = shared_story(dict(request.query_params) if request else {}, defaults)
        if shared is None:
            return tuple(gr.skip() for _ in range(10))
        settings = shared.settings
        if shared.revision and shared.revision != info.get("revision"):
            gr.Info(
                f"This link was made with model revision {escape_html(shared.revision)}; this app serves "
                f"{escape_html(str(info.get('revision') or 'the bundled model'))}, so the story may differ."
            )
        return (
            shared.prompt,
            shared.best_of,
            settings.temperature,
            settings.top_k,
            settings.top_p,
            settings.min_p,
            settings.repetition_penalty,
            settings.max_new_tokens,
            str(settings.seed),
            True,
        )

    def tell_shared(
        opened,
        prompt,
        best_of,
        temperature,
        top_k,
        top_p,
        min_p,
        repetition_penalty,
        max_new_tokens,
        seed,
        request: gr.Request,
    ):
        if not opened:  # an ordinary visit: nothing to tell yet
            yield tuple(gr.skip() for _ in range(5))
            return
        yield from tell(
            prompt, best_of, temperature, top_k, top_p, min_p, repetition_penalty, max_new_tokens, seed, request
        )

    # ----- chain tab ------------------------------------------------------------------------------
    def chain_outputs(chain: Chain, person_text=None, backup=None) -> tuple:
        state, chain_view, status = views.chain_panel(chain, service.view_start(chain))
        has_turns = bool(chain.turns)
        return (
            state,
            chain_view,
            status,
            gr.Button(interactive=has_turns),
            gr.Button(interactive=has_turns),
            gr.skip() if person_text is None else person_text,
            gr.skip() if backup is None else backup,
        )

    @warns(outputs=7)
    def add_person_sentence(state, text):
        chain, rest = person_turn(Chain.from_dict(state), text)
        if rest:
            gr.Info("One sentence per turn: the rest is waiting in the box for your next turn.", duration=5)
        return chain_outputs(chain, rest)

    @warns(outputs=7)
    def model_turn(state, request: gr.Request):
        return chain_outputs(service.model_turn(Chain.from_dict(state), {}, client=client_of(request)))

    @warns(outputs=7)
    def retry_model_turn(state, request: gr.Request):
        return chain_outputs(service.retry_model_turn(Chain.from_dict(state), {}, client=client_of(request)))

    @warns(outputs=7)
    def undo(state, backup):
        chain = Chain.from_dict(state)
        if not chain.turns and backup:  # undoing a reset brings the whole chain back
            gr.Info("The chain is back.", duration=3)
            return chain_outputs(Chain.from_dict(backup), backup={})
        return chain_outputs(chain.undo())

    @warns(outputs=7)
    def reset(state):
        chain = Chain.from_dict(state)
        if chain.turns:
            gr.Info("Chain cleared. Press ↩️ Undo to bring it back.", duration=6)
        return chain_outputs(Chain(), "", backup=chain.to_dict() if chain.turns else gr.skip())

    @warns(outputs=7)
    def edit_sentence(state, number, text):
        return chain_outputs(Chain.from_dict(state).edit(sentence_index(number), text))

    @warns(outputs=1)
    def sentence_at(state, number) -> str:
        sentences = Chain.from_dict(state).sentences
        index = sentence_index(number)
        return sentences[index] if 0 <= index < len(sentences) else ""

    @warns(outputs=1)
    def export(state, kind: str) -> str:
        return str(exports.write(Chain.from_dict(state), kind))

    # ----- layout ---------------------------------------------------------------------------------
    with gr.Blocks(title="Two-Sentence Horror", fill_width=True, delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# 🕯️ Two-Sentence Horror", elem_id="title")
        gr.Markdown(views.tagline_markdown(info), elem_id="tagline")
        gr.HTML(views.banner_html(info), visible=bool(views.banner_html(info)), elem_id="banner")

        # The chain lives in the browser, so a reload does not lose it. (Outside the tabs: a
        # component in a tab not yet shown is not mounted, and would not read its storage.)
        chain_state = gr.BrowserState(None, storage_key="horror-chain", secret=BROWSER_SECRET)
        reset_backup = gr.BrowserState({}, storage_key="horror-chain-before-reset", secret=BROWSER_SECRET)

        with gr.Tab("Tell me a story", id="story"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=5):
                    prompt = gr.Textbox(
                        label="First sentence (optional)",
                        lines=1,
                        max_lines=4,
                        placeholder="Leave it empty and the model writes its own opening…",
                        info=f"Press Enter to generate · up to {MAX_PROMPT_CHARS:,} characters",
                        elem_id="prompt",
                        elem_classes=["counted", f"max-{MAX_PROMPT_CHARS}"],
                    )
                    with gr.Row():
                        random_button = gr.Button("🎲 Random prompt", elem_id="random-prompt")
                        model_written = gr.Checkbox(label="let the model write it", value=False)
                    with gr.Row():
                        generate = gr.Button("Generate", variant="primary", scale=2, elem_id="generate")
                        again = gr.Button("↻ Again", scale=1, elem_id="again")
                    best_of = gr.Slider(
                        1,
                        MAX_BEST_OF,
                        value=defaults.best_of,
                        step=1,
                        label="Best of N",
                        info="1 streams one story; more writes N and ranks them by how sure "
                        "the model was (8 read better than 1 in blind tests; a seed then retells "
                        "them only with the same N)",
                    )
                    with gr.Accordion("Advanced settings", open=False):
                        temperature = setting(
                            "Temperature", 0, 2.0, defaults.temperature, 0.05, "0 = always the likeliest word"
                        )
                        top_k = setting("Top-k", 0, 200, defaults.top_k, 1, "0 = off")
                        top_p = setting("Top-p", 0.05, 1.0, defaults.top_p, 0.01, "1 = off")
                        min_p = setting("Min-p", 0, 0.5, defaults.min_p, 0.01, "0 = off")
                        repetition_penalty = setting(
                            "Repetition penalty", 0.5, 2.0, defaults.repetition_penalty, 0.05, "1 = off"
                        )
                        max_new_tokens = setting(
                            "Max new tokens",
                            1,
                            MAX_NEW_TOKENS_LIMIT,
                            defaults.max_new_tokens,
                            1,
                            "a sentence cut off here gets a few more to end",
                        )
                        seed = gr.Textbox(
                            label="Seed",
                            placeholder="blank = random",
                            max_lines=1,
                            value="" if defaults.seed is None else str(defaults.seed),
                        )
                with gr.Column(scale=6):
                    story_view = gr.HTML(views.story_html("", ""), elem_id="story-view", padding=False)
                    stats = gr.Markdown(elem_id="story-stats")
                    gr.Markdown(views.CONFIDENCE_HELP, elem_id="confidence-help")
                    ranked = gr.HTML(elem_id="ranked", padding=False)
                    with gr.Row(elem_id="story-actions"):
                        reuse_seed = gr.Button(
                            "📌 Reuse this story's seed", size="sm", visible=False, elem_id="reuse-seed"
                        )
                        copy_link = gr.Button(
                            "🔗 Copy a link to this story", size="sm", visible=False, elem_id="copy-link"
                        )
                    share = gr.Textbox(visible=False, elem_id="share-query")
                    share_link = gr.Textbox(
                        label="Link to this story: it opens the app on this same story",
                        visible=False,
                        buttons=["copy"],
                        interactive=False,
                        elem_id="share-link",
                    )
                    last_seed = gr.State(None)
                    opened_from_link = gr.State(False)
            # Whole sentences (Gradio's own examples cut them at 60 characters); a click fills the
            # box and presses Generate in the browser (assets/app.js), so it tells it as typed.
            gr.HTML(views.examples_html(service.example_prompts(10)), elem_id="examples")

        with gr.Tab("Story chain", id="chain"):
            gr.Markdown(
                "Take turns with the model, one sentence each. You can open, or let the model open; "
                "it always answers with exactly one sentence, using the model's default settings "
                "(the Advanced settings apply to single stories only). Your chain is kept in this "
                "browser, so a reload does not lose it."
            )
            chain_view = gr.HTML(views.chain_html(Chain()), elem_id="chain-view")
            chain_status = gr.Markdown(views.chain_status(Chain()), elem_id="chain-status")
            with gr.Row():
                person_text = gr.Textbox(
                    label="Your sentence",
                    placeholder="Write the next sentence and press Enter…",
                    info=f"Up to {MAX_SENTENCE_CHARS} characters",
                    scale=5,
                    elem_id="person-sentence",
                    elem_classes=["counted", f"max-{MAX_SENTENCE_CHARS}"],
                )
                add = gr.Button("Add my sentence", variant="primary", scale=1, min_width=160)
            with gr.Row(elem_id="chain-buttons"):
                model_button = gr.Button("🕯️ Model's turn", min_width=120)
                retry = gr.Button("🔁 Retry model", min_width=120)
                undo_button = gr.Button("↩️ Undo", min_width=120)
            with gr.Accordion("Edit a sentence", open=False):
                with gr.Row():
                    edit_number = gr.Number(label="Sentence number", precision=0, scale=1)
                    edit_text = gr.Textbox(label="New text", scale=4)
                    save_edit = gr.Button("Save edit", scale=1)
            with gr.Row(elem_id="chain-files"):
                download_text = gr.Button("⬇️ Download as text", interactive=False, min_width=120)
                download_markdown = gr.Button("⬇️ Download as Markdown", interactive=False, min_width=120)
                reset_button = gr.Button("🗑️ Start over", variant="stop", min_width=120, elem_id="reset")
            download_file = gr.DownloadButton(visible="hidden", elem_id="chain-download")

        with gr.Tab("About", id="about"):
            gr.Markdown(views.about_markdown(info))
            if LOSS_CURVES.is_file():
                gr.Image(str(LOSS_CURVES), label="Loss curves (training and validation)", interactive=False)
            else:
                gr.Markdown("*No loss curves yet: they appear here with a trained model.*")
            gr.Markdown(views.API_HELP)

        # ----- events (UI-only events are private: the API is /story, /chain_step and /score) ------
        story_inputs = [prompt, best_of, temperature, top_k, top_p, min_p, repetition_penalty, max_new_tokens, seed]
        story_outputs = [story_view, stats, ranked, last_seed, share]
        shown_after_story = [reuse_seed, copy_link, share_link]
        for trigger in (generate.click, prompt.submit):
            trigger(tell, story_inputs, story_outputs, js=SHOW_STORY, api_visibility="private")
        again.click(tell_again, story_inputs[:-1], story_outputs, js=SHOW_STORY, api_visibility="private")
        last_seed.change(
            lambda value: [gr.update(visible=value is not None)] * 3,
            last_seed,
            shown_after_story,
            show_progress="hidden",
            api_visibility="private",
        )
        share.change(None, share, share_link, js="(query) => window.horror.shareLink(query)", show_progress="hidden")
        reuse_seed.click(lambda value: "" if value is None else str(value), last_seed, seed, api_visibility="private")
        copy_link.click(None, share_link, None, js="(link) => window.horror.copy(link)")
        # While a random prompt is on its way, Generate waits for it (else it would tell the old one).
        random_button.click(
            lambda: [gr.Button(interactive=False)] * 2,
            None,
            [generate, again],
            queue=False,
            js="() => window.horror.holdGenerate()",
            api_visibility="private",
        ).then(random_prompt, model_written, prompt, api_visibility="private").then(
            lambda: [gr.Button(interactive=True)] * 2, None, [generate, again], queue=False, api_visibility="private"
        )
        # A shared link: its settings go into the boxes, then the story is told from them.
        demo.load(open_shared_story, None, [*story_inputs, opened_from_link], api_visibility="private").then(
            tell_shared, [opened_from_link, *story_inputs], story_outputs, api_visibility="private"
        )

        chain_panel = [
            chain_state,
            chain_view,
            chain_status,
            download_text,
            download_markdown,
            person_text,
            reset_backup,
        ]
        demo.load(
            lambda state: chain_outputs(Chain.from_dict(state)), chain_state, chain_panel, api_visibility="private"
        )
        for trigger in (add.click, person_text.submit):
            trigger(add_person_sentence, [chain_state, person_text], chain_panel, api_visibility="private").success(
                model_turn, chain_state, chain_panel, api_visibility="private"
            )
        model_button.click(model_turn, chain_state, chain_panel, api_visibility="private")
        retry.click(retry_model_turn, chain_state, chain_panel, api_visibility="private")
        undo_button.click(undo, [chain_state, reset_backup], chain_panel, api_visibility="private")
        reset_button.click(reset, chain_state, chain_panel, api_visibility="private")
        save_edit.click(edit_sentence, [chain_state, edit_number, edit_text], chain_panel, api_visibility="private")
        edit_number.change(sentence_at, [chain_state, edit_number], edit_text, api_visibility="private")
        for button, kind in ((download_text, "txt"), (download_markdown, "md")):
            button.click(
                functools.partial(export, kind=kind), chain_state, download_file, api_visibility="private"
            ).success(None, None, None, js="() => window.horror.startDownload()")

        add_api(service, demo)

    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    return demo


def launch(demo: gr.Blocks, **options) -> tuple:
    """Serve `demo` with the app's theme, CSS and script (Gradio 6 takes these at launch).
    show_error stays off: handlers turn every failure into a friendly message, never a traceback."""
    # Uvicorn believes X-Forwarded-For from any loopback peer by default, so a local caller could
    # name itself anything and dodge the rate limit; the app reads that header itself, trusting
    # only $HORROR_TRUSTED_PROXIES hops (see horror.ratelimit.client_address).
    os.environ.setdefault("FORWARDED_ALLOW_IPS", "")
    return demo.launch(theme=dark_theme(), css=CSS, js=JS, show_error=False, **options)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    set_cpu_threads()
    launch(build_demo(StoryTeller.load()), server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"))
