"""The Gradio pieces app.py wires together: the theme, the error policy (the person's mistakes told
plainly, ours logged and apologised for), small input helpers, and the three API endpoints.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

import gradio as gr

from horror.errors import UserError
from horror.ratelimit import client_address, trusted_proxy_count
from horror.service import SAMPLING_FIELDS, StoryService, sampling_overrides
from horror.text import escape_html

logger = logging.getLogger("horror.app")
TRUSTED_PROXIES = trusted_proxy_count()  # who may say, in X-Forwarded-For, who the caller is
SORRY = "Something went wrong on our side. Please try again in a moment."


def dark_theme() -> gr.themes.Base:
    """A red-on-charcoal theme that stays dark whatever the visitor's system prefers."""
    theme = gr.themes.Base(primary_hue="red", secondary_hue="orange", neutral_hue="zinc").set(
        body_background_fill_dark="#0b0b0d", block_background_fill_dark="#141417", button_primary_text_color="white"
    )
    for name, value in list(vars(theme).items()):  # light mode gets the dark values too
        if name.endswith("_dark") and value is not None and not name.startswith("_"):
            setattr(theme, name[: -len("_dark")], value)
    return theme


def _message(error: Exception) -> str:
    if isinstance(error, UserError):
        return str(error)
    logger.error("unexpected error in a request", exc_info=error)
    return SORRY


def toast_message(error: Exception) -> str:
    """What a warning toast says about `error`: toasts render HTML and the message may quote the
    person's own text, so it is escaped."""
    return escape_html(_message(error))


def warns(outputs: int) -> Callable[[Callable], Callable]:
    """For page events: a failure is one warning toast, and every output stays as it was."""

    def decorate(handler: Callable) -> Callable:
        def warn(error: Exception) -> tuple:
            gr.Warning(toast_message(error))
            return tuple(gr.skip() for _ in range(outputs))

        if inspect.isgeneratorfunction(handler):

            @functools.wraps(handler)
            def streaming(*args, **kwargs):
                try:
                    yield from handler(*args, **kwargs)
                except Exception as error:
                    yield warn(error)

            return streaming

        @functools.wraps(handler)
        def calling(*args, **kwargs):
            try:
                return handler(*args, **kwargs)
            except Exception as error:
                return warn(error)

        return calling

    return decorate


def api_errors(handler: Callable) -> Callable:
    """For API endpoints: the message as plain text (a client shows it; nothing renders HTML)."""

    @functools.wraps(handler)
    def calling(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except Exception as error:
            raise gr.Error(_message(error), print_exception=False) from None

    return calling


def settings_from(*values: Any) -> dict[str, Any]:
    """The sampling settings from the sliders or the /story API, given in SAMPLING_FIELDS order."""
    return sampling_overrides(**dict(zip(SAMPLING_FIELDS, values, strict=True)))


def setting(label: str, low: float, high: float, default: float, step: float, info: str) -> gr.Slider:
    """A slider for one sampling setting, reaching at least the model's own default."""
    return gr.Slider(low, max(high, default), value=default, step=step, label=label, info=info)


def client_of(request: gr.Request | None) -> str:
    """The caller's address, the key for rate limiting."""
    if request is None:
        return "local"
    host = request.client.host if getattr(request, "client", None) else None
    return client_address(dict(request.headers or {}), host, TRUSTED_PROXIES)


def describe_api_parameters(endpoint: Callable, dependency: gr.events.Dependency, demo: gr.Blocks) -> None:
    """Name each parameter on the API page and say what it is (from the endpoint's docstring),
    instead of Gradio's "the 1st Api component"."""
    parameters = list(inspect.signature(endpoint).parameters)
    descriptions = gr.utils.get_function_description(endpoint)[1]
    for name, block in zip(parameters, demo.fns[dependency["id"]].inputs):
        block.label = name
        block._api_info = {**block._api_info, "additional_description": descriptions.get(name, "")}


def sentence_index(number) -> int:
    """A 1-based sentence number from the box, as a 0-based index (-1 for blank or not a number)."""
    try:
        return int(number) - 1
    except (TypeError, ValueError, OverflowError):
        return -1


def add_api(service: StoryService, demo: gr.Blocks) -> None:
    """The public API: /story, /chain_step and /score (typed: gradio_client and the API page read
    the hints and the docstrings)."""

    @api_errors
    def story(
        prompt: str = "",
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        min_p: float | None = None,
        repetition_penalty: float | None = None,
        max_new_tokens: int | None = None,
        seed: int | None = None,
        best_of: int | None = None,
        request: gr.Request = None,
    ) -> dict:
        """A two-sentence horror story continuing `prompt` (empty: the model writes its own opening).

        Parameters:
            prompt: the first sentence; empty lets the model write its own
            temperature: randomness, 0 (always the likeliest word) to 5; empty for the model's default
            top_k: sample only from the k likeliest words (0 = off)
            top_p: sample only from the likeliest words that together reach this probability (1 = off)
            min_p: drop words less likely than this share of the likeliest one (0 = off)
            repetition_penalty: above 1, words already used are less likely (1 = off)
            max_new_tokens: the most word pieces to write
            seed: a whole number; the same seed and settings tell the same story (empty = random)
            best_of: write this many stories (1 to 8) and return the one the model is surest of; empty
                for the model's default
        """
        overrides = settings_from(temperature, top_k, top_p, min_p, repetition_penalty, max_new_tokens, seed)
        if best_of is not None:
            overrides["best_of"] = best_of  # checked with the other settings: 1 to 8
        return service.story(prompt, overrides, client=client_of(request))

    @api_errors
    def chain_step(
        chain: list[str], temperature: float | None = None, seed: int | None = None, request: gr.Request = None
    ) -> str:
        """The model's next sentence after a story chain.

        Parameters:
            chain: the sentences so far: a list of strings, or of {"author", "sentence"} turns, or that as JSON
            temperature: randomness, 0 to 5; empty for the model's default
            seed: a whole number; the same seed gives the same sentence (empty = random)
        """
        overrides = sampling_overrides(temperature=temperature, seed=seed)
        return service.chain_step(chain, overrides, client=client_of(request))

    @api_errors
    def score(text: str, prompt: str = "", request: gr.Request = None) -> dict:
        """How likely the model finds `text`: confidence, perplexity and bits per byte.

        Parameters:
            text: the story (or continuation) to score
            prompt: an optional first sentence that `text` continues
        """
        return service.score(text, prompt, client=client_of(request))

    for endpoint in (story, chain_step, score):
        describe_api_parameters(endpoint, gr.api(endpoint, api_name=endpoint.__name__), demo)
