"""How often a story glues onto the end of its prompt, with and without the boundary rule
(token healing + a space after a finished clause; horror/healing.py), on the same model and seeds.

    python bench/prompt_endings.py                 # the bundled model, 12 endings x 5 seeds
    python bench/prompt_endings.py --model runs/E/model --seeds 10 --show 5

"Without" is what the app did before: the prompt's tokens as typed, and a space put between the
prompt and the new text unless the new text began with one.
"""

from __future__ import annotations

import argparse
import statistics
import time

from horror import generation
from horror.storyteller import StoryTeller
from horror.text import is_glued, one_line
from train.hardware import describe_cpu

ENDINGS = [
    "The sign on the cellar door said 'Keep out.'",
    "She whispered, \u201cDon't open the door.\u201d",
    "I heard a knock at the back door",
    "My son drew our family and one more (a tall one)",
    'The babysitter texted me: "Who is the man in the hall?"',
    "I waited for the footsteps to stop...",
    "Nobody answered when I called her name\u2026",
    "The note on the fridge said \u2018Don\u2019t look behind you.\u2019",
    "Grandma always said [the dead knock twice]",
    "The mirror fogged up and a finger wrote HELP",
    "I told my daughter to stop talking to the wall,",
    "My reflection blinked first;",
]


def old_story(teller: StoryTeller, prompt: str, seed: int) -> tuple[str, int]:
    """The story as the app told it before (no healing, a space inserted at the join), and its new tokens."""
    settings = teller.story_settings(prompt, seed=seed)
    ids = [teller.tokenizer.bos_id, *teller.tokenizer.encode(prompt)]
    result = generation.generate(teller.engine, teller.tokenizer, ids, settings)[0]
    text = result.text.rstrip()
    return one_line(f"{prompt}{text}" if text[:1].isspace() else f"{prompt} {text}"), len(result.token_ids)


def new_story(teller: StoryTeller, prompt: str, seed: int) -> tuple[str, int]:
    story = teller.tell(prompt, seed=seed)
    return story.story, story.new_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a folder or Hub repo id (default: the bundled model)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--show", type=int, default=3, help="glued examples to print per variant")
    args = parser.parse_args()
    teller = StoryTeller.load(args.model)
    print(f"CPU: {describe_cpu()}")
    print(f"model: {teller.source.requested} ({teller.num_parameters / 1e6:.1f}M parameters)")
    variants = {
        "before (no healing)": lambda prompt, seed: old_story(teller, prompt, seed),
        "now (healing + space rule)": lambda prompt, seed: new_story(teller, prompt, seed),
    }
    for name, tell in variants.items():
        glued, seconds, tokens = [], [], 0
        for prompt in ENDINGS:
            for seed in range(args.seeds):
                started = time.perf_counter()
                story, new_tokens = tell(prompt, seed)
                seconds.append(time.perf_counter() - started)
                tokens += new_tokens
                if is_glued(prompt, story):
                    glued.append((prompt, story))
        total = len(ENDINGS) * args.seeds
        print(
            f"{name}: {len(glued)} of {total} stories glued ({len(glued) / total:.0%}); "
            f"median {statistics.median(seconds) * 1000:.1f} ms per story, "
            f"{sum(seconds) * 1000 / tokens:.3f} ms per new token"
        )
        for prompt, story in glued[: args.show]:
            print(f"    {prompt!r} -> {story[len(prompt) : len(prompt) + 40]!r}")


if __name__ == "__main__":
    main()
