"""Figures as PNG bytes (matplotlib, headless): the eval's charts and the search's panels."""

from __future__ import annotations

import io


def png(fig) -> bytes:
    """The figure as PNG bytes (120 dpi, tight bounding box)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return buffer.getvalue()
