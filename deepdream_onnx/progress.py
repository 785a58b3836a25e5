"""A one-line progress bar for a terminal; silent when the output is not a terminal."""

import os
import sys
import time

_BAR_WIDTH = 24
# Redrawing on every chunk of a download would spend more time writing to the
# terminal than reading from the network; ten frames a second looks smooth enough.
_MIN_INTERVAL = 0.1


def _clock_text(seconds):
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


def human_bytes(n):
    """A byte count as a short string: '512 B', '1.5 KiB', '51.1 MiB'."""
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"


class Progress:
    """Progress of a task with ``total`` steps (or bytes when unit="B"; total None if unknown).

    Drawn on one line of ``stream`` (sys.stderr by default), rewritten with '\\r': label,
    bar, count/total, elapsed time, ETA from the average rate, and the latest status.
    enabled None means "only if the stream is a terminal", so redirected output stays
    clean.  Use as a context manager, or call close() to end the line.
    """

    def __init__(self, total, label="", stream=None, enabled=None, unit="", *, clock=time.monotonic):
        self.total = total
        self.label = label
        self.unit = unit
        self.count = 0
        self.status = ""
        # Looked up now, not at import, so redirections made after import are honoured.
        self.stream = sys.stderr if stream is None else stream
        self.enabled = _is_tty(self.stream) if enabled is None else bool(enabled)
        self._clock = clock
        self._start = clock()
        self._last_draw = None
        self._last_width = 0
        self._closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def update(self, n=1, status=""):
        """Advance by n; a non-empty status replaces the one shown."""
        self.count += n
        if status:
            self.status = status
        if not self.enabled or self._closed:
            return
        now = self._clock()
        finished = self.total is not None and self.count >= self.total
        if finished or self._last_draw is None or now - self._last_draw >= _MIN_INTERVAL:
            self._draw(now)

    def close(self):
        """Draw the final state and end the line (once)."""
        if self._closed:
            return
        self._closed = True
        if self.enabled:
            self._draw(self._clock())
            self.stream.write("\n")
            self.stream.flush()

    def render(self, now=None):
        """The progress line as text (without '\\r')."""
        elapsed = max(0.0, (self._clock() if now is None else now) - self._start)
        parts = [self.label] if self.label else []
        if self.total is not None:
            fraction = min(1.0, self.count / self.total) if self.total > 0 else 1.0
            filled = int(fraction * _BAR_WIDTH)
            parts.append("[" + "#" * filled + "." * (_BAR_WIDTH - filled) + "]")
            parts.append(f"{self._amount(self.count)}/{self._amount(self.total)}")
        else:
            parts.append(self._amount(self.count))
        parts.append(_clock_text(elapsed))
        if self.total is not None and 0 < self.count < self.total and elapsed > 0:
            remaining = (self.total - self.count) * elapsed / self.count
            parts.append(f"ETA {_clock_text(remaining)}")
        if self.status:
            parts.append(self.status)
        return " ".join(parts)

    def _amount(self, n):
        if self.unit == "B":
            return human_bytes(n)
        return f"{n}{self.unit}"

    def _draw(self, now):
        # A line longer than the terminal wraps, and '\r' then only rewrites the last row.
        line = self.render(now)
        width = _terminal_width(self.stream)
        if width:
            line = line[: width - 1]
        # Pad so a shorter line fully covers the previous one.
        self.stream.write("\r" + line + " " * max(0, self._last_width - len(line)))
        self.stream.flush()
        self._last_width = len(line)
        self._last_draw = now


def _terminal_width(stream):
    """Columns of the terminal behind stream, or None if it cannot be told."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):  # no fileno, not a terminal, closed
        return None


def _is_tty(stream):
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False
