"""Shapes of the stream-token endpoint."""

from __future__ import annotations

from pydantic import BaseModel, Field


class StreamTokenOut(BaseModel):
    token: str = Field(description="Opens this validation's event stream as `?token=`; shown once")
    expires_at: str = Field(description="After this it opens nothing (a stream it opened stays open)")
    events_url: str = Field(description="The event stream's URL with the token")
