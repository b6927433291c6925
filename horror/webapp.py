"""Everything the app does except drawing it: requests on plain Python values, per-client rate
limiting, and the HTML/Markdown the app shows (user text always escaped). No Gradio here, so
it all tests without a browser; app.py only lays out components and wires events to this.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from horror.chain import AUTHOR_LABELS, MAX_TURNS, Chain, escape_markdown, split_first_sentence
from horror.config import MAX_SEED
from horror.generation import sentence_ends
from horror.storyteller import Story, StoryTeller, clean_text

RATE_ENV_VAR = "HORROR_RATE_LIMIT_PER_MINUTE"  # 0 turns rate limiting off
BURST_ENV_VAR = "HORROR_RATE_LIMIT_BURST"
TRUSTED_PROXIES_ENV_VAR = "HORROR_TRUSTED_PROXIES"
DEFAULT_RATE_PER_MINUTE = 30.0  # a person clicking never gets near this; a script soon does
DEFAULT_BURST = 10
MAX_BEST_OF = 8
EXPORT_MAX_AGE_SECONDS = 3600
SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "max_new_tokens", "seed")


class RateLimitExceeded(ValueError):
    """A client asked too often; the message says how long to wait."""


class RateLimiter:
    """A token bucket per client: `burst` requests at once, refilled at `per_minute`."""

    def __init__(self, per_minute: float = DEFAULT_RATE_PER_MINUTE, burst: int = DEFAULT_BURST,
                 clock: Callable[[], float] = time.monotonic, max_clients: int = 10_000):
        if per_minute < 0 or burst < 1:
            raise ValueError(f"need per_minute >= 0 and burst >= 1, got {per_minute} and {burst}")
        self.per_minute, self.burst, self.clock, self.max_clients = per_minute, burst, clock, max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, when counted)
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "RateLimiter":
        """Limits from $HORROR_RATE_LIMIT_PER_MINUTE (0: off) and $HORROR_RATE_LIMIT_BURST."""
        try:
            per_minute = float(environ.get(RATE_ENV_VAR, DEFAULT_RATE_PER_MINUTE))
            burst = int(environ.get(BURST_ENV_VAR, DEFAULT_BURST))
        except ValueError as error:
            raise ValueError(f"{RATE_ENV_VAR} must be a number and {BURST_ENV_VAR} a whole number: {error}") from None
        return cls(per_minute, burst)

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def check(self, client: str) -> None:
        """Spend one request of `client`'s allowance, or raise RateLimitExceeded."""
        if not self.enabled:
            return
        refill_per_second = self.per_minute / 60
        with self._lock:
            now = self.clock()
            tokens, counted = self._buckets.get(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - counted) * refill_per_second)
            if tokens < 1:
                wait = (1 - tokens) / refill_per_second
                self._buckets[client] = (tokens, now)
                raise RateLimitExceeded(f"Too many requests: please wait {wait:.0f} s and try again "
                                        f"(the limit is {self.per_minute:g} a minute).")
            self._buckets[client] = (tokens - 1, now)
            if len(self._buckets) > self.max_clients:
                self._forget_idle_clients(now, refill_per_second)

    def _forget_idle_clients(self, now: float, refill_per_second: float) -> None:
        # A bucket that has refilled is the same as no bucket; past that, drop the stalest ones.
        full_after = self.burst / refill_per_second
        self._buckets = {c: b for c, b in self._buckets.items() if now - b[1] < full_after}
        while len(self._buckets) > self.max_clients:
            del self._buckets[min(self._buckets, key=lambda c: self._buckets[c][1])]


def trusted_proxy_count(environ: Mapping[str, str] = os.environ) -> int:
    """How many proxies in front of the app append to X-Forwarded-For: $HORROR_TRUSTED_PROXIES,
    else 1 on a Hugging Face Space (which sets $SPACE_ID), else 0 (trust the socket only)."""
    value = environ.get(TRUSTED_PROXIES_ENV_VAR, "1" if environ.get("SPACE_ID") else "0")
    if not value.strip().isdigit():
        raise ValueError(f"{TRUSTED_PROXIES_ENV_VAR} must be a whole number of proxies, got {value!r}")
    return int(value)


def client_address(headers: Mapping[str, str], host: str | None, trusted_proxies: int = 0) -> str:
    """Who is asking. Each trusted proxy appends the address it heard from to X-Forwarded-For, so
    the caller is the entry `trusted_proxies` from the right; entries further left are whatever
    the caller sent and could be forged. With no trusted proxy, the socket's address."""
    forwarded = next((value for key, value in headers.items() if key.lower() == "x-forwarded-for"), "")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    if trusted_proxies and hops:
        return hops[-min(trusted_proxies, len(hops))]
    return host or "unknown"


# ----- inputs ---------------------------------------------------------------------------------
def parse_seed(value: Any) -> int | None:
    """A seed from a text box or API value: blank means random."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        seed = int(str(value).strip()) if not isinstance(value, (int, float)) else int(value)
    except (ValueError, OverflowError):
        raise ValueError(f"The seed must be a whole number (or blank for random), got {str(value)[:40]!r}.") from None
    if isinstance(value, float) and not value.is_integer() or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"The seed must be a whole number from 0 to {MAX_SEED}, got {value!r}.")
    return seed


def sampling_overrides(**values: Any) -> dict[str, Any]:
    """Sampling settings from the UI or the API: None means the model's default; seed parsed."""
    unknown = sorted(set(values) - set(SAMPLING_FIELDS))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; known settings are {list(SAMPLING_FIELDS)}")
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
            raise ValueError(f"the chain is not valid JSON: {error}") from None
    if isinstance(value, dict):
        return Chain.from_dict(value).sentences
    if not isinstance(value, list):
        raise ValueError("the chain must be a list of sentences, e.g. [\"I heard a knock.\"]")
    if len(value) > MAX_TURNS:
        raise ValueError(f"a chain holds at most {MAX_TURNS} sentences, got {len(value)}")
    if all(isinstance(item, dict) for item in value):
        return Chain.from_dict({"turns": value}).sentences
    turns = [{"author": "person", "sentence": item} for item in value if not (isinstance(item, str) and not item.strip())]
    return Chain.from_dict({"turns": turns}).sentences


def person_turn(chain: Chain, text: str) -> tuple[Chain, str]:
    """`chain` plus the first sentence of the person's `text`, and whatever text is left over
    (one sentence per turn: the rest waits for the person's next turn)."""
    chain = chain.add_person_sentence(text)
    return chain, split_first_sentence(text)[1]


# ----- the service ----------------------------------------------------------------------------
class StoryService:
    """The app's requests: each checks the caller's rate limit, then asks the StoryTeller."""

    def __init__(self, teller: StoryTeller, rate_limiter: RateLimiter | None = None, export_dir: Path | None = None):
        self.teller = teller
        self.rate_limiter = rate_limiter or RateLimiter(per_minute=0)
        self.export_dir = export_dir or Path(tempfile.gettempdir()) / "horror-exports"

    def stream_story(self, prompt: str, overrides: dict[str, Any], client: str) -> Iterator[str | Story]:
        """The story text as it grows, then the finished Story."""
        self.rate_limiter.check(client)
        return self.teller.stream(prompt, **overrides)

    def best_of(self, prompt: str, n: int, overrides: dict[str, Any], client: str) -> list[Story]:
        """`n` stories, best first."""
        if not 1 <= int(n) <= MAX_BEST_OF:
            raise ValueError(f"best of must be between 1 and {MAX_BEST_OF}, got {n}")
        self.rate_limiter.check(client)
        return self.teller.best_of(prompt, int(n), **overrides)

    def tell_views(self, prompt: str, best_of: int, overrides: dict[str, Any],
                   client: str) -> Iterator[tuple[str, str, str, int | None]]:
        """What the story panel shows while a story is written: (story HTML, stats Markdown,
        ranked HTML, seed). One story streams token by token; best-of-N arrives ranked at once."""
        if int(best_of) > 1:
            stories = self.best_of(prompt, int(best_of), overrides, client)
            best = stories[0]
            yield story_html(best.prompt, best.story), story_stats(best, len(stories)), ranked_html(stories), best.seed
            return
        cleaned_prompt = clean_text(prompt)
        for item in self.stream_story(prompt, overrides, client):
            if isinstance(item, Story):
                yield story_html(item.prompt, item.story), story_stats(item), "", item.seed
            else:
                yield story_html(cleaned_prompt, item, writing=True), "*The model is writing…*", "", None

    def story(self, prompt: str, overrides: dict[str, Any], client: str) -> dict[str, Any]:
        """One story as a JSON-able dict (the /story endpoint)."""
        self.rate_limiter.check(client)
        return self.teller.tell(prompt, **overrides).to_dict()

    def score(self, text: str, prompt: str, client: str) -> dict[str, Any]:
        """How likely the model finds `text` (the /score endpoint)."""
        self.rate_limiter.check(client)
        return self.teller.score(text, prompt or None).to_dict()

    def chain_step(self, chain: Any, overrides: dict[str, Any], client: str) -> str:
        """The model's next sentence after a chain sent as sentences or JSON (the /chain_step endpoint)."""
        sentences = parse_chain_sentences(chain)
        return self._next_sentence(Chain.from_dict({"turns": [{"author": "person", "sentence": s}
                                                              for s in sentences]}), overrides, client)

    def model_turn(self, chain: Chain, overrides: dict[str, Any], client: str) -> Chain:
        """`chain` plus the model's next sentence."""
        if chain.is_full:
            raise ValueError(f"The chain is full ({MAX_TURNS} sentences): export it, then reset to start again.")
        return chain.add_model_sentence(self._next_sentence(chain, overrides, client))

    def retry_model_turn(self, chain: Chain, overrides: dict[str, Any], client: str) -> Chain:
        """`chain` with the model's last sentence written afresh."""
        if chain.last_author != "model":
            raise ValueError("The last sentence is yours, not the model's: there is nothing to retry.")
        return chain.retry_last_model_sentence(self._next_sentence(chain.undo(), overrides, client))

    def _next_sentence(self, chain: Chain, overrides: dict[str, Any], client: str) -> str:
        self.rate_limiter.check(client)
        view = chain.model_view(self._view_tokens(overrides), self._count_tokens)
        return self.teller.continue_chain(view, **overrides).continuation

    def view_start(self, chain: Chain, overrides: dict[str, Any] | None = None) -> int:
        """Index of the oldest sentence the model still sees."""
        return chain.model_view_start(self._view_tokens(overrides or {}), self._count_tokens)

    def _view_tokens(self, overrides: dict[str, Any]) -> int:
        # The same budget StoryTeller.continue_chain uses: the window less the new tokens and <BOS>.
        settings = self.teller.settings(**overrides)
        return max(1, self.teller.config.context_length - settings.max_new_tokens - 1)

    def _count_tokens(self, sentence: str) -> int:
        return len(self.teller.tokenizer.encode(" " + sentence))

    def chain_views(self, chain: Chain) -> tuple[dict[str, Any], str, str, Path | None, Path | None]:
        """What the chain panel shows: (state to keep, chain HTML, status line, text file, Markdown file)."""
        text_file, markdown_file = self.write_exports(chain)
        return chain.to_dict(), chain_html(chain, self.view_start(chain)), chain_status(chain), text_file, markdown_file

    def random_prompt(self, model_written: bool, client: str) -> str:
        """A first sentence from the curated list, or one the model writes (rate limited)."""
        if model_written:
            self.rate_limiter.check(client)
        return self.teller.random_prompt(model_written=model_written)

    def example_prompts(self, count: int = 10) -> list[str]:
        """`count` curated prompts spread across the list's themes."""
        prompts = self.teller.curated_prompts()
        step = max(1, len(prompts) // count)
        return prompts[::step][:count]

    def write_exports(self, chain: Chain) -> tuple[Path | None, Path | None]:
        """Text and Markdown files of the chain for download (None, None while it is empty)."""
        if not chain.turns:
            return None, None
        text, markdown = chain.export_text(), chain.export_markdown()
        folder = self.export_dir / hashlib.sha256(markdown.encode()).hexdigest()[:24]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "story-chain.txt").write_text(text, encoding="utf-8")
        (folder / "story-chain.md").write_text(markdown, encoding="utf-8")
        self._forget_old_exports()
        return folder / "story-chain.txt", folder / "story-chain.md"

    def _forget_old_exports(self) -> None:
        cutoff = time.time() - EXPORT_MAX_AGE_SECONDS
        for folder in self.export_dir.iterdir():
            if folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)


API_HELP = """### Use the API

```python
from gradio_client import Client

client = Client("<this Space's id, e.g. user/two-sentence-horror>")
story = client.predict("I heard my mother call my name from the kitchen.", api_name="/story")
print(story["story"], story["confidence"], story["seed"])
print(client.predict(["The lake was calm.", "Too calm."], api_name="/chain_step"))
print(client.predict("The door opened. Nobody was there.", api_name="/score"))
```

`/story` also takes `temperature`, `top_k`, `top_p`, `min_p`, `repetition_penalty`, `max_new_tokens` and `seed`;
the same seed and settings give the same story. Requests are rate limited per client.
"""


# ----- what the page shows (all user and model text escaped) ----------------------------------
_LINK_BRACKETS = str.maketrans({"[": "&#91;", "]": "&#93;"})


def escape_html(text: str) -> str:
    """`text` shown literally in HTML; brackets too, so that even a component or toast that also
    reads Markdown never turns "[x](javascript:...)" into a link."""
    return html.escape(text).translate(_LINK_BRACKETS)


def story_html(prompt: str, text: str, writing: bool = False) -> str:
    """The story with its setup and twist styled apart; `writing` adds a blinking cursor."""
    if not text:
        return '<div class="story story-empty">Your story will appear here…</div>'
    if prompt and text.startswith(prompt):
        setup, twist = prompt, text[len(prompt):]
    else:  # the model wrote its own first sentence
        ends = sentence_ends(text + (" " if not writing else ""))
        setup, twist = (text[: ends[0]], text[ends[0]:]) if ends else (text, "")
    cursor = '<span class="cursor">▌</span>' if writing else ""
    return (f'<div class="story"><span class="setup">{escape_html(setup)}</span>'
            f'<span class="twist">{escape_html(twist)}</span>{cursor}</div>')


def percent(share: float) -> str:
    """A share as a percentage, with a decimal below 10% so an unsure model does not read 0%."""
    return f"{share:.0%}" if share >= 0.1 else f"{share:.1%}"


def story_stats(story: Story, best_of: int = 1) -> str:
    """One Markdown line: confidence, length, time, and the seed that reproduces the story
    (for best-of-N, the seed reproduces the whole batch with the same N)."""
    batch = f" (with best of {best_of})" if best_of > 1 else ""
    return (f"**Confidence** {percent(story.confidence)} · {story.new_tokens} tokens in {story.seconds:.1f} s · "
            f"stopped by {story.finish_reason} · **seed** `{story.seed}`{batch}")


def ranked_html(stories: list[Story]) -> str:
    """Best-of-N results as an ordered list, best first."""
    if len(stories) < 2:
        return ""
    items = "".join(f'<li><span class="confidence">{percent(story.confidence)}</span> {escape_html(story.story)}</li>'
                    for story in stories)
    return f'<div class="ranked"><h4>All {len(stories)} stories, most confident first</h4><ol>{items}</ol></div>'


def chain_html(chain: Chain, view_start: int = 0) -> str:
    """The chain as numbered sentences by author; those the model no longer sees are dimmed."""
    if not chain.turns:
        return ('<div class="chain chain-empty">No sentences yet. Write the first one below, '
                'or let the model open.</div>')
    rows = []
    for index, turn in enumerate(chain.turns):
        unseen = " unseen" if index < view_start else ""
        rows.append(f'<li class="turn {turn.author}{unseen}"><span class="who">{AUTHOR_LABELS[turn.author]}</span>'
                    f'<span class="sentence">{escape_html(turn.sentence)}</span></li>')
    seen = f"sentence {len(chain)}" if view_start == len(chain) - 1 else f"sentences {view_start + 1}–{len(chain)}"
    note = (f'<p class="window-note">The model now sees only {seen}; the dimmed ones have left its memory '
            f'(they stay in your story).</p>' if view_start else "")
    return f'<div class="chain"><ol>{"".join(rows)}</ol>{note}</div>'


def chain_status(chain: Chain) -> str:
    """Whose turn it is and how long the chain is."""
    if not chain.turns:
        return "Your move: write an opening sentence, or let the model open."
    who = "the model's" if chain.last_author == "person" else "your"
    return f"{len(chain)} of {MAX_TURNS} sentences · it is {who} turn."


def banner_html(info: dict[str, Any]) -> str:
    """Warnings for the top of the page: a fallback to the bundled model, an untrained model."""
    lines = []
    if info.get("notice"):
        lines.append(f"⚠️ <b>Serving the bundled model instead of the one asked for.</b> {escape_html(str(info['notice']))}")
    if not info.get("trained", True):
        lines.append("🧪 <b>This model is untrained</b> (random weights): it writes gibberish until a trained "
                     "model is bundled.")
    return "".join(f'<div class="banner">{line}</div>' for line in lines)


def about_markdown(info: dict[str, Any]) -> str:
    """The About tab: where the model came from, its shape, its data and its validation losses."""
    card = info.get("card") if isinstance(info.get("card"), dict) else {}
    settings = info.get("generation_config", {})
    rows = [
        ("Source", "bundled with the app (assets/model)" if info.get("source_kind") == "bundled"
                   else f"{info.get('source')} ({info.get('source_kind')})"),
        ("Revision", info.get("revision") or "—"),
        ("Trained", "yes" if info.get("trained", True) else "no: an untrained placeholder (random weights)"),
        ("Parameters", f"{info.get('parameters', 0) / 1e6:.2f} M"),
        ("Shape", f"{info.get('n_layers')} layers, d_model {info.get('d_model')}, {info.get('n_heads')} heads, "
                  f"FFN {info.get('d_ff')}, context {info.get('context_length')} tokens, "
                  f"vocabulary {info.get('vocab_size'):,}" if isinstance(info.get("vocab_size"), int) else "—"),
        ("Inference", info.get("inference") or "—"),
        ("Training data", _training_data(card)),
        ("Validation loss", _per_phase(card.get("val_loss"), "{:.3f} nats/token")),
        ("Tokens seen", _per_phase(card.get("tokens_seen"), "{:,}")),
        ("Default sampling", ", ".join(f"{name.replace('_', ' ')} {settings.get(name)}"
                                       for name in SAMPLING_FIELDS[:-1] if name in settings)),
    ]
    table = "\n".join(f"| {name} | {escape_markdown(str(value), inline=True)} |" for name, value in rows)
    notice = f"\n\n> ⚠️ {escape_markdown(str(info['notice']))}" if info.get("notice") else ""
    if not info.get("trained", True):
        notice += "\n\n> 🧪 **Untrained placeholder:** random weights, so the stories are gibberish for now."
    return (f"### The model\n\nA GPT-style decoder-only transformer trained from scratch to write two-sentence "
            f"horror stories.{notice}\n\n| Fact | Value |\n|---|---|\n{table}\n")


def _training_data(card: dict[str, Any]) -> str:
    data = card.get("data")
    if not isinstance(data, dict) or not data:
        return "—"
    phases = []
    for phase, facts in data.items():
        sources = facts.get("sources", []) if isinstance(facts, dict) else []
        names = ", ".join(Path(str(s.get("source", "?"))).name or str(s.get("source")) for s in sources
                          if isinstance(s, dict))
        stories = facts.get("train_stories") if isinstance(facts, dict) else None
        count = f" ({stories:,} training stories)" if isinstance(stories, int) else ""
        phases.append(f"{phase}: {names or '?'}{count}")
    return "; ".join(phases)


def _per_phase(values: Any, number_format: str) -> str:
    if not isinstance(values, dict) or not values:
        return "—"
    return "; ".join(f"{phase} {number_format.format(value)}" if isinstance(value, (int, float)) else f"{phase} {value}"
                     for phase, value in values.items())

