"""Two-Sentence Horror: a small GPT that writes two-sentence horror stories."""

from horror.config import GenerationConfig, ModelConfig
from horror.storyteller import Story, StoryTeller

__all__ = ["GenerationConfig", "ModelConfig", "Story", "StoryTeller"]
