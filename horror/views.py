"""What the app shows, as HTML and Markdown strings: the story, its stats, the ranked list, the
chain, the banner and the About tab. Every piece of user or model text is escaped here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from horror.chain import MAX_TURNS, Chain
from horror.service import SAMPLING_FIELDS
from horror.storyteller import Story
from horror.text import escape_html, escape_markdown, sentence_ends

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
def story_html(prompt: str, text: str, writing: bool = False) -> str:
    """The story with its setup and twist styled apart; `writing` adds a blinking cursor."""
    if not text:
        return '<div class="story story-empty">Your story will appear here…</div>'
    if prompt and text.startswith(prompt):
        setup, twist = prompt, text[len(prompt) :]
    else:  # the model wrote its own first sentence
        ends = sentence_ends(text + (" " if not writing else ""))
        setup, twist = (text[: ends[0]], text[ends[0] :]) if ends else (text, "")
    cursor = '<span class="cursor">▌</span>' if writing else ""
    return (
        f'<div class="story"><span class="setup">{escape_html(setup)}</span>'
        f'<span class="twist">{escape_html(twist)}</span>{cursor}</div>'
    )


def percent(share: float) -> str:
    """A share as a percentage, with a decimal below 10% so an unsure model does not read 0%."""
    return f"{share:.0%}" if share >= 0.1 else f"{share:.1%}"


FINISH_REASONS = {
    "eos": "the model ended it there",
    "sentences": "stopped after the twist",
    "length": "cut at the length limit",
}
CONFIDENCE_HELP = (
    "*How sure* is the average chance the model gave each word piece it wrote: a story it "
    "finds ordinary scores high, a surprising one low, and neither means better."
)


def story_stats(story: Story, best_of: int = 1) -> str:
    """One Markdown line in plain words: how sure the model was, how long it took, why it stopped,
    and the seed that tells the story again (for best-of-N, only with the same N)."""
    seed = f"**seed** `{story.seed}`" + (f" (tells it again with best of {best_of})" if best_of > 1 else "")
    reason = FINISH_REASONS.get(story.finish_reason or "", story.finish_reason or "")
    return f"**How sure:** {percent(story.confidence)} · written in {story.seconds:.1f} s · {reason} · {seed}"


def story_panel(stories: list[Story]) -> tuple[str, str, str, int | None]:
    """The story panel for a draft or for finished stories (best first): story HTML, stats
    Markdown, ranked-list HTML and the seed to reuse (None while it is a draft)."""
    best = stories[0]
    if best.finish_reason is None:
        return story_html(best.prompt, best.story, writing=True), "*The model is writing…*", "", None
    return story_html(best.prompt, best.story), story_stats(best, len(stories)), ranked_html(stories), best.seed


def examples_html(prompts: list[str]) -> str:
    """First sentences to try, whole, each a button (assets/app.js tells the story on a click)."""
    items = "".join(
        f'<li><button type="button" class="example-prompt">{escape_html(prompt)}</button></li>' for prompt in prompts
    )
    return f'<div class="examples"><h4>Try a first sentence (click to tell it)</h4><ul>{items}</ul></div>'


def ranked_html(stories: list[Story]) -> str:
    """Best-of-N results as an ordered list, best first, folded away: the best is already shown
    above it, and best of N may be the default."""
    if len(stories) < 2:
        return ""
    items = "".join(
        f'<li><span class="confidence">{percent(story.confidence)}</span> {escape_html(story.story)}</li>'
        for story in stories
    )
    return (
        f'<details class="ranked"><summary>All {len(stories)} stories the model wrote, most confident first'
        f"</summary><ol>{items}</ol></details>"
    )


def chain_html(chain: Chain, view_start: int = 0) -> str:
    """The chain as numbered sentences by author; those the model no longer sees are dimmed."""
    if not chain.turns:
        return (
            '<div class="chain chain-empty">No sentences yet. Write the first one below, or let the model open.</div>'
        )
    rows = []
    for index, turn in enumerate(chain.turns):
        unseen = " unseen" if index < view_start else ""
        rows.append(
            f'<li class="turn {turn.author}{unseen}"><span class="who">{turn.label}</span>'
            f'<span class="sentence">{escape_html(turn.sentence)}</span></li>'
        )
    seen = f"sentence {len(chain)}" if view_start == len(chain) - 1 else f"sentences {view_start + 1}–{len(chain)}"
    note = (
        f'<p class="window-note">The model now sees only {seen}; the dimmed ones have left its memory '
        f"(they stay in your story).</p>"
        if view_start
        else ""
    )
    return f'<div class="chain"><ol>{"".join(rows)}</ol>{note}</div>'


def chain_panel(chain: Chain, view_start: int) -> tuple[dict[str, Any], str, str]:
    """The chain panel: the state to keep in the browser, the chain HTML and the status line."""
    return chain.to_dict(), chain_html(chain, view_start), chain_status(chain)


def chain_status(chain: Chain) -> str:
    """Whose turn it is and how long the chain is."""
    if not chain.turns:
        return "Your move: write an opening sentence, or let the model open."
    who = "the model's" if chain.last_author == "person" else "your"
    return f"{len(chain)} of {MAX_TURNS} sentences · it is {who} turn."


def tagline_markdown(info: dict[str, Any]) -> str:
    """The header's promise, kept honest: what writes the stories and what to expect of it."""
    size = f"{info.get('parameters', 0) / 1e6:.1f}M-parameter" if info.get("parameters") else "small"
    return (
        f"A {size} GPT, trained from scratch on a laptop-class CPU, writes a horror story in two "
        f"sentences: an ordinary setup, then the twist. It is tiny next to the chatbots you know, so "
        f"expect odd grammar and twists that miss; press ↻ Again for another. How it was made and what "
        f"its numbers mean: the About tab."
    )


def banner_html(info: dict[str, Any]) -> str:
    """Warnings for the top of the page: a fallback to the bundled model, an untrained model."""
    lines = []
    if info.get("notice"):
        lines.append(
            f"⚠️ <b>Serving the bundled model instead of the one asked for.</b> {escape_html(str(info['notice']))}"
        )
    if not info.get("trained", True):
        lines.append(
            "🧪 <b>This model is untrained</b> (random weights): it writes gibberish until a trained model is bundled."
        )
    return "".join(f'<div class="banner">{line}</div>' for line in lines)


def about_markdown(info: dict[str, Any]) -> str:
    """The About tab: where the model came from, its shape, its data and its validation losses."""
    card = info.get("card") if isinstance(info.get("card"), dict) else {}
    settings = info.get("generation_config", {})
    rows = [
        (
            "Source",
            "bundled with the app (assets/model)"
            if info.get("source_kind") == "bundled"
            else f"{info.get('source')} ({info.get('source_kind')})",
        ),
        ("Revision", info.get("revision") or "—"),
        ("Trained", "yes" if info.get("trained", True) else "no: an untrained placeholder (random weights)"),
        ("Parameters", f"{info.get('parameters', 0) / 1e6:.2f} M"),
        (
            "Shape",
            f"{info.get('n_layers')} layers, d_model {info.get('d_model')}, {info.get('n_heads')} heads, "
            f"FFN {info.get('d_ff')}, context {info.get('context_length')} tokens, "
            f"vocabulary {info.get('vocab_size'):,}"
            if isinstance(info.get("vocab_size"), int)
            else "—",
        ),
        ("Inference", info.get("inference") or "—"),
        ("Training data", _training_data(card)),
        ("Validation loss", _per_phase(card.get("val_loss"), "{:.3f} nats/token")),
        ("Held-out horror", f"{card['bits_per_byte']:.3f} bits/byte" if _is_number(card.get("bits_per_byte")) else "—"),
        ("Training time", _training_time(card)),
        ("Tokens seen", _per_phase(card.get("tokens_seen"), "{:,}")),
        (
            "Default sampling",
            ", ".join(
                f"{name.replace('_', ' ')} {settings.get(name)}"
                for name in (*SAMPLING_FIELDS[:-1], "best_of")  # not the seed: a default has none
                if name in settings
            ),
        ),
    ]
    table = "\n".join(f"| {name} | {escape_markdown(str(value), inline=True)} |" for name, value in rows)
    notice = f"\n\n> ⚠️ {escape_markdown(str(info['notice']))}" if info.get("notice") else ""
    if not info.get("trained", True):
        notice += "\n\n> 🧪 **Untrained placeholder:** random weights, so the stories are gibberish for now."
    return (
        f"### The model\n\nA GPT-style decoder-only transformer trained from scratch to write two-sentence "
        f"horror stories.{notice}\n\n{_expectations(info, card)}\n\n| Fact | Value |\n|---|---|\n{table}\n\n"
        f"{NUMBERS_EXPLAINED}\n"
    )


NUMBERS_EXPLAINED = """### What the numbers mean

- **How sure** (under each story): the average chance the model gave each word piece it wrote. A story it finds
  ordinary scores high, a surprising one low; neither is better.
- **Validation loss**: how surprised the model is, on average, by each word piece of text it never trained on, in
  nats (lower is better; 0 would mean it always knew the next piece).
- **Held-out horror, bits/byte**: the same surprise per byte of two-sentence horror it never saw, which compares
  models with different vocabularies (lower is better).
- **Seed**: the number that drew this story's random choices; the same seed and settings tell the same story."""


def _expectations(info: dict[str, Any], card: dict[str, Any]) -> str:
    """What to expect of the stories, in plain words, from the model card's own figures."""
    size = f"{info.get('parameters', 0) / 1e6:.1f}M parameters" if info.get("parameters") else "a small model"
    text = (
        f"**What to expect:** it is small ({size}; the chatbots you know have thousands of times more) and was "
        f"trained from scratch on a 2-core CPU, so its sentences often sound right and mean little."
    )
    read = card.get("blind_read")
    if isinstance(read, dict) and all(_is_number(read.get(key)) for key in ("grammatical", "coherent", "stories")):
        text += (
            f" In a blind read of {read['stories']:.0f} of its stories, {read['grammatical']:.0%} were grammatical "
            f"and {read['coherent']:.0%} had a setup and a twist that made sense together."
        )
    return text


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _training_time(card: dict[str, Any]) -> str:
    seconds = card.get("train_seconds")
    if not isinstance(seconds, dict) or not all(_is_number(value) for value in seconds.values()) or not seconds:
        return "—"
    return f"{sum(seconds.values()) / 60:.0f} minutes (" + _per_phase(seconds, "{:.0f} s") + ")"


def _source_name(source: dict[str, Any]) -> str:
    """A source's label when the trainer gave it one ("ghost"), else its file or folder name."""
    label = source.get("label")
    if isinstance(label, str) and label:
        return label
    return Path(str(source.get("source", "?"))).name or str(source.get("source"))


def _training_data(card: dict[str, Any]) -> str:
    data = card.get("data")
    if not isinstance(data, dict) or not data:
        return "—"
    phases = []
    for phase, facts in data.items():
        sources = facts.get("sources", []) if isinstance(facts, dict) else []
        names = ", ".join(_source_name(s) for s in sources if isinstance(s, dict))
        stories = facts.get("train_stories") if isinstance(facts, dict) else None
        count = f" ({stories:,} training stories)" if isinstance(stories, int) else ""
        phases.append(f"{phase}: {names or '?'}{count}")
    return "; ".join(phases)


def _per_phase(values: Any, number_format: str) -> str:
    if not isinstance(values, dict) or not values:
        return "—"
    return "; ".join(
        f"{phase} {number_format.format(value)}" if isinstance(value, (int, float)) else f"{phase} {value}"
        for phase, value in values.items()
    )
