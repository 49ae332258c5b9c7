"""How docker prints times, sizes and long text in its tables (go-units and docker's
formatter), for `conveyor ps` and the docker stand-in. Stdlib only."""

from __future__ import annotations


def human_duration(seconds: float) -> str:
    """docker's (go-units) HumanDuration: "5 seconds", "About a minute", "3 hours", "2 weeks"."""
    hours = int(seconds / 3600 + 0.5)
    for limit, text in ((1, "Less than a second"), (2, "1 second"), (60, f"{int(seconds)} seconds"),
                        (120, "About a minute"), (3600, f"{int(seconds / 60)} minutes")):
        if seconds < limit:
            return text
    for limit, text in ((2, "About an hour"), (48, f"{hours} hours"), (24 * 14, f"{hours // 24} days"),
                        (24 * 60, f"{hours // 24 // 7} weeks"), (24 * 730, f"{hours // 24 // 30} months")):
        if hours < limit:
            return text
    return f"{int(seconds / 3600) // 24 // 365} years"


def go_time(stamp: float | None) -> str:
    """Go's time.Unix(t, 0).String(), docker's CreatedAt: 2026-01-02 15:04:05 +0100 CET."""
    from datetime import datetime  # here: `ps` starts without it

    return datetime.fromtimestamp(int(stamp)).astimezone().strftime("%Y-%m-%d %H:%M:%S %z %Z") if stamp else ""


def ellipsis(text: str, width: int) -> str:
    """docker's Ellipsis: at most ``width`` columns, the last one "…" when cut (an East Asian
    wide character takes two)."""
    if text.isascii():
        return text if len(text) <= width else text[: width - 1] + "…"
    import unicodedata

    widths = [2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text]
    used = 0
    for i, w in enumerate(widths):
        if used + w > width - 1 and sum(widths) > width:
            return text[:i] + "…"
        used += w
    return text


def human_size(size: float) -> str:
    """docker's (go-units) HumanSizeWithPrecision(size, 3), decimal units: "1.98MB", "512kB"."""
    return _scaled(size, 1000.0, ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"), 3)


def binary_size(size: float) -> str:
    """docker's (go-units) BytesSize, binary units as `docker stats` prints: "1.5MiB"."""
    return _scaled(size, 1024.0, ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"), 4)


def _scaled(size: float, base: float, units: tuple[str, ...], digits: int) -> str:
    i = 0
    while size >= base and i < len(units) - 1:
        size /= base
        i += 1
    return f"{size:.{digits}g}{units[i]}"
