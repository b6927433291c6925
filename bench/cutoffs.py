"""How many stories end mid-sentence at the token limit, with and without the budget to finish the
sentence (generation.FINISH_SENTENCE_TOKENS), on the same model and seeds.

    python bench/cutoffs.py                 # the bundled model, 400 stories with no prompt
    python bench/cutoffs.py --model runs/E/model --stories 1000
"""

from __future__ import annotations

import argparse

from horror import generation
from horror.storyteller import StoryTeller
from train.hardware import describe_cpu


def count(teller: StoryTeller, stories: int) -> tuple[int, int]:
    """(stories stopped at the token limit, stories that end mid-sentence with "…")."""
    at_limit = mid_sentence = 0
    for seed in range(stories):
        story = teller.tell("", seed=seed)
        at_limit += story.finish_reason == "length"
        mid_sentence += story.story.endswith("\u2026")
    return at_limit, mid_sentence


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a folder or Hub repo id (default: the bundled model)")
    parser.add_argument("--stories", type=int, default=400)
    args = parser.parse_args()
    teller = StoryTeller.load(args.model)
    print(f"CPU: {describe_cpu()}")
    print(f"model: {teller.source.requested} ({teller.num_parameters / 1e6:.1f}M parameters)")
    budget = generation.FINISH_SENTENCE_TOKENS
    for label, extra in (("no budget (as before)", 0), (f"{budget}-token budget (now)", budget)):
        generation.FINISH_SENTENCE_TOKENS = extra
        at_limit, mid_sentence = count(teller, args.stories)
        print(f"{label}: {at_limit} of {args.stories} reached the token limit, {mid_sentence} end mid-sentence")
    generation.FINISH_SENTENCE_TOKENS = budget


if __name__ == "__main__":
    main()
