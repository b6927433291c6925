"""The app's requests on plain Python values: each is rate limited per client, then asks the
StoryTeller. No Gradio and no HTML here (horror.views draws; app.py wires the two together).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from horror.chain import MAX_TURNS, Chain
from horror.config import MAX_BEST_OF, MAX_SEED
from horror.errors import UserError
from horror.ratelimit import RateLimiter
from horror.storyteller import Story, StoryTeller
from horror.text import split_first_sentence

SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "max_new_tokens", "seed")
Method = TypeVar("Method", bound=Callable[..., Any])


# ----- inputs ---------------------------------------------------------------------------------
def parse_seed(value: Any) -> int | None:
    """A seed from a text box or API value: blank means random."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        seed = int(str(value).strip()) if not isinstance(value, (int, float)) else int(value)
    except (ValueError, OverflowError):
        raise UserError(f"The seed must be a whole number (or blank for random), got {str(value)[:40]!r}.") from None
    if isinstance(value, float) and not value.is_integer() or not 0 <= seed <= MAX_SEED:
        raise UserError(f"The seed must be a whole number from 0 to {MAX_SEED}, got {value!r}.")
    return seed


def sampling_overrides(**values: Any) -> dict[str, Any]:
    """Sampling settings from the UI or the API: None means the model's default; seed parsed."""
    unknown = sorted(set(values) - set(SAMPLING_FIELDS))
    if unknown:
        raise UserError(f"unknown setting(s) {unknown}; known settings are {list(SAMPLING_FIELDS)}")
    overrides = {name: value for name, value in values.items() if value is not None and name != "seed"}
    overrides["seed"] = parse_seed(values.get("seed"))
    return overrides


def parse_chain_sentences(value: Any) -> list[str]:
    """The sentences of a chain sent to the API: a list of strings, a list of turns, a
    {"turns": [...]} object, or any of those as a JSON string."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip()[:1] in ("[", "{") else [value]
        except json.JSONDecodeError as error:
            raise UserError(f"the chain is not valid JSON: {error}") from None
    if isinstance(value, dict):
        return Chain.from_dict(value).sentences
    if not isinstance(value, list):
        raise UserError('the chain must be a list of sentences, e.g. ["I heard a knock."]')
    if len(value) > MAX_TURNS:
        raise UserError(f"a chain holds at most {MAX_TURNS} sentences, got {len(value)}")
    if all(isinstance(item, dict) for item in value):
        return Chain.from_dict({"turns": value}).sentences
    turns = [
        {"author": "person", "sentence": item} for item in value if not (isinstance(item, str) and not item.strip())
    ]
    return Chain.from_dict({"turns": turns}).sentences


def person_turn(chain: Chain, text: str) -> tuple[Chain, str]:
    """`chain` plus the first sentence of the person's `text`, and whatever text is left over
    (one sentence per turn: the rest waits for the person's next turn)."""
    chain = chain.add_person_sentence(text)
    return chain, split_first_sentence(text)[1]


# ----- the service ----------------------------------------------------------------------------
def rate_limited(method: Method) -> Method:
    """The request spends one of `client`'s allowance before it runs (at the call, also for a
    generator, so a refused stream never starts)."""

    @functools.wraps(method)
    def checked(self: StoryService, *args: Any, client: str, **kwargs: Any) -> Any:
        self.rate_limiter.check(client)
        return method(self, *args, **kwargs)

    return checked  # type: ignore[return-value]


class StoryService:
    """The app's requests. Those that run the model take `client=` and are rate limited."""

    def __init__(self, teller: StoryTeller, rate_limiter: RateLimiter | None = None):
        self.teller = teller
        self.rate_limiter = rate_limiter or RateLimiter(per_minute=0)

    @rate_limited
    def tell(self, prompt: str, best_of: int, overrides: dict[str, Any]) -> Iterator[list[Story]]:
        """The story panel's content as it is written: one story streams draft by draft (a list
        of one); best-of-N arrives once, ranked, best first."""
        best_of = _best_of(best_of)
        if best_of > 1:
            return iter([self.teller.best_of(prompt, best_of, **overrides)])
        return ([draft] for draft in self.teller.stream(prompt, **overrides))

    @rate_limited
    def story(self, prompt: str, overrides: dict[str, Any]) -> dict[str, Any]:
        """One story as a JSON-able dict (the /story endpoint)."""
        return self.teller.tell(prompt, **overrides).to_dict()

    @rate_limited
    def score(self, text: str, prompt: str) -> dict[str, Any]:
        """How likely the model finds `text` (the /score endpoint)."""
        return self.teller.score(text, prompt or None).to_dict()

    @rate_limited
    def chain_step(self, chain: Any, overrides: dict[str, Any]) -> str:
        """The model's next sentence after a chain sent as sentences or JSON (the /chain_step endpoint)."""
        return self.teller.continue_chain(parse_chain_sentences(chain), **overrides).continuation

    @rate_limited
    def model_turn(self, chain: Chain, overrides: dict[str, Any]) -> Chain:
        """`chain` plus the model's next sentence."""
        if chain.is_full:
            raise UserError(f"The chain is full ({MAX_TURNS} sentences): export it, then reset to start again.")
        return chain.add_model_sentence(self.teller.continue_chain(chain.sentences, **overrides).continuation)

    @rate_limited
    def retry_model_turn(self, chain: Chain, overrides: dict[str, Any]) -> Chain:
        """`chain` with the model's last sentence written afresh."""
        if chain.last_author != "model":
            raise UserError("The last sentence is yours, not the model's: there is nothing to retry.")
        sentence = self.teller.continue_chain(chain.undo().sentences, **overrides).continuation
        return chain.retry_last_model_sentence(sentence)

    @rate_limited
    def model_written_prompt(self) -> str:
        """A first sentence the model writes itself."""
        return self.teller.random_prompt(model_written=True)

    def random_prompt(self) -> str:
        """A first sentence from the curated list (no model run, so not rate limited)."""
        return self.teller.random_prompt()

    def view_start(self, chain: Chain, overrides: dict[str, Any] | None = None) -> int:
        """Index of the oldest sentence the model still sees."""
        return self.teller.chain_view_start(chain.sentences, self.teller.settings(**(overrides or {})))

    def example_prompts(self, count: int = 10) -> list[str]:
        """`count` curated prompts spread across the list's themes."""
        prompts = self.teller.curated_prompts()
        step = max(1, len(prompts) // count)
        return prompts[::step][:count]


def _best_of(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= MAX_BEST_OF:
        raise UserError(f"best of must be between 1 and {MAX_BEST_OF}, got {value!r}")
    return int(value)
