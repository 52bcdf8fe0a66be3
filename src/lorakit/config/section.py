"""The base of every config section."""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    # Typos are errors, and a validated config is a value that nothing mutates.
    model_config = ConfigDict(extra="forbid", frozen=True)
