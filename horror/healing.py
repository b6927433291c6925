"""Where the prompt ends and the story goes on: token healing and the space after a finished clause.

A prompt's last token is cut where the person stopped typing, not where the tokenizer would cut
running text: `'Keep out.'` ends in a quote token that, in training, was almost always followed by
more text glued to it, and the model duly wrote "…out.'amgalic". So the last token is backed off
and the continuation must begin by writing its text again (token healing), letting the model pick
the token it would have used there, e.g. ".'" or " door" -> " doors". After a prompt that ends a
sentence, a quote or a clause (. ! ? … , ; : and closing quotes or brackets), the next character
must be whitespace (or the story ends), so new words never glue onto the person's last one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from horror.text import CLAUSE_ENDS
from horror.tokenizer import StoryTokenizer


@dataclass(frozen=True)
class Boundary:
    """What the first new characters must be: `healed` (the backed-off token's text, written again
    and not shown twice), then whitespace when `space_after`."""

    healed: str = ""
    space_after: bool = False

    @property
    def active(self) -> bool:
        return bool(self.healed) or self.space_after

    def settled(self, written: str) -> bool:
        """True once `written` (the new text so far, healed part included) is past the boundary."""
        return len(written) > len(self.healed) if self.space_after else len(written) >= len(self.healed)

    def fits(self, candidate: str) -> bool:
        """Whether new text that starts with `candidate` can still keep to the boundary."""
        if len(candidate) <= len(self.healed):
            return self.healed.startswith(candidate)
        return candidate.startswith(self.healed) and (not self.space_after or candidate[len(self.healed)].isspace())


NO_BOUNDARY = Boundary()  # free text from the first token (no prompt, or raw generation)


def heal(tokenizer: StoryTokenizer, prompt_ids: list[int], prompt: str) -> tuple[list[int], Boundary]:
    """`prompt_ids` (a start token, then `prompt`'s tokens) with the last prompt token backed off,
    and the boundary the continuation must keep to. An empty prompt is left as it is."""
    if not prompt or len(prompt_ids) < 2:
        return prompt_ids, NO_BOUNDARY
    space_after = prompt[-1] in CLAUSE_ENDS
    healed = tokenizer.decode(prompt_ids[-1:])
    if "\ufffd" in healed or not prompt.endswith(healed):  # half a character: leave the token in place
        return prompt_ids, Boundary("", space_after)
    return prompt_ids[:-1], Boundary(healed, space_after)


class BoundaryMask:
    """Which tokens may come next while a row is still at a boundary. Built once per tokenizer:
    tokens are bucketed by their first character, so a step looks at a few hundred, not all."""

    def __init__(self, tokenizer: StoryTokenizer, vocab_size: int):
        self.eos_id = tokenizer.eos_id
        self.vocab_size = vocab_size
        self.texts = [tokenizer.decode([i]) if i not in tokenizer.special_ids else "" for i in range(vocab_size)]
        self.by_first_char: dict[str, list[int]] = {}
        for i, text in enumerate(self.texts):
            if text:
                self.by_first_char.setdefault(text[0], []).append(i)
        self.id_of = {text: i for i, text in enumerate(self.texts) if text and "\ufffd" not in text}
        self.starts_with_space = torch.tensor([text[:1].isspace() for text in self.texts])

    def allowed(self, boundary: Boundary, written: str) -> torch.Tensor:
        """A (V,) bool mask of the tokens that keep `written` on `boundary`; <EOS> only once the
        healed text is written again (an ending must not drop the person's last characters)."""
        if len(written) >= len(boundary.healed):  # only the space is left: fits() is "starts with whitespace"
            allowed = self.starts_with_space.clone()
        else:
            rest = boundary.healed[len(written) :]
            # Tokens that write part of the rest, or all of it and go on.
            candidates = [self.id_of[rest[:n]] for n in range(1, len(rest) + 1) if rest[:n] in self.id_of]
            candidates += [i for i in self.by_first_char.get(rest[0], []) if self.texts[i].startswith(rest)]
            allowed = torch.zeros(self.vocab_size, dtype=torch.bool)
            allowed[[i for i in candidates if boundary.fits(written + self.texts[i])]] = True
        allowed[self.eos_id] = len(written) >= len(boundary.healed)
        return allowed


@functools.lru_cache(maxsize=4)
def boundary_mask(tokenizer: StoryTokenizer, vocab_size: int) -> BoundaryMask:
    """The mask builder for `tokenizer` (built on first use, then reused by every request)."""
    return BoundaryMask(tokenizer, vocab_size)
