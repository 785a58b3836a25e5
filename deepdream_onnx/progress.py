"""A one-line progress bar for a terminal or a Jupyter notebook cell; silent elsewhere.

In a notebook, a dream shows its progress with the same object the command line uses:

    with Progress(octave_n * iter_n, label="dream") as bar:
        result = dream.deepdream(net, img, iter_n=iter_n, octave_n=octave_n, progress=bar)
"""

import os
import sys
import time

from deepdream_onnx import display as _display

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
    In a Jupyter kernel, when no stream is given and stderr is not a terminal, the same
    line is an output of the running cell, updated in place (display.NotebookLine of
    this package).
    enabled None means "only on a terminal or in a notebook", so redirected output stays
    clean.  Redraws come at most every 0.1 s, and the last step is always drawn.
    Use as a context manager, or call close() to end the line.

    display: a callable(text) returning an object with update(text), called on the first
    draw, then updated, instead of writing to the stream; None chooses as above.  Given,
    enabled None means True.
    """

    def __init__(self, total, label="", stream=None, enabled=None, unit="", *, clock=time.monotonic,
                 display=None):
        self.total = total
        self.label = label
        self.unit = unit
        self.count = 0
        self.status = ""
        # Looked up now, not at import, so redirections made after import are honoured.
        self.stream = sys.stderr if stream is None else stream
        if (display is None and stream is None and enabled is not False
                and not _is_tty(self.stream) and _display.in_notebook()):
            display = _display.NotebookLine
        self._display = display
        self._line = None  # what display returned, once drawn
        if enabled is None:
            enabled = display is not None or _is_tty(self.stream)
        self.enabled = bool(enabled)
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
            if self._display is None:
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
        line = self.render(now)
        self._last_draw = now
        if self._display is not None:  # a notebook: one output, replaced in place
            if self._line is None:
                self._line = self._display(line)
            else:
                self._line.update(line)
            return
        # A line longer than the terminal wraps, and '\r' then only rewrites the last row.
        width = _terminal_width(self.stream)
        if width:
            line = line[: width - 1]
        # Pad so a shorter line fully covers the previous one.
        self.stream.write("\r" + line + " " * max(0, self._last_width - len(line)))
        self.stream.flush()
        self._last_width = len(line)


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
