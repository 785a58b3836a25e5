import io
import os
import sys

import pytest

from deepdream_onnx.progress import Progress, human_bytes


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_disabled_on_non_tty_prints_nothing():
    stream = io.StringIO()
    with Progress(10, label="work", stream=stream) as bar:
        assert not bar.enabled
        for _ in range(10):
            bar.update(status="busy")
    assert stream.getvalue() == ""


def test_explicitly_disabled_tty_prints_nothing():
    stream = FakeTTY()
    with Progress(3, stream=stream, enabled=False) as bar:
        bar.update(3)
    assert stream.getvalue() == ""


def test_stream_defaults_to_stderr_at_construction(monkeypatch):
    stream = FakeTTY()
    monkeypatch.setattr("sys.stderr", stream)
    with Progress(2, label="x") as bar:
        bar.update(2)
    assert "2/2" in stream.getvalue()


def test_tty_shows_label_bar_count_eta_status_and_newline_on_close():
    stream, clock = FakeTTY(), FakeClock()
    bar = Progress(100, label="dreaming", stream=stream, clock=clock)
    clock.now += 10
    bar.update(25, status="octave 1/4")
    out = stream.getvalue()
    assert out.startswith("\r")
    assert "dreaming" in out and "[######" in out and "25/100" in out
    assert "00:10" in out and "ETA 00:30" in out and "octave 1/4" in out
    assert "\n" not in out
    bar.close()
    assert stream.getvalue().endswith("\n")
    assert stream.getvalue().count("\n") == 1
    bar.close()  # idempotent
    assert stream.getvalue().count("\n") == 1


def test_status_is_kept_until_replaced():
    stream, clock = FakeTTY(), FakeClock()
    with Progress(3, stream=stream, clock=clock) as bar:
        bar.update(status="first")
        clock.now += 1
        bar.update()
        assert bar.render().endswith("first")
        bar.update(status="second")
        assert bar.render().endswith("second")


def test_redraws_are_throttled_but_last_update_always_drawn():
    stream, clock = FakeTTY(), FakeClock()
    bar = Progress(1000, stream=stream, clock=clock)
    for _ in range(999):
        clock.now += 0.001  # ~1 s in all: about 10 redraws allowed
        bar.update()
    draws = stream.getvalue().count("\r")
    assert 5 <= draws <= 12
    clock.now += 0.001
    bar.update()  # the last one, within the throttle interval
    assert stream.getvalue().count("\r") == draws + 1
    assert "1000/1000" in stream.getvalue().rsplit("\r", 1)[1]
    assert "ETA" not in stream.getvalue().rsplit("\r", 1)[1]


def test_shorter_line_covers_previous_one():
    stream, clock = FakeTTY(), FakeClock()
    bar = Progress(2, stream=stream, clock=clock)
    bar.update(status="a long status message")
    clock.now += 1
    bar.update(status="short")
    first, second = stream.getvalue().split("\r")[1:]
    assert len(second) >= len(first)


def test_unknown_total_has_no_bar_or_eta():
    stream, clock = FakeTTY(), FakeClock()
    with Progress(None, label="reading", stream=stream, clock=clock) as bar:
        clock.now += 5
        bar.update(7)
    out = stream.getvalue()
    assert "reading 7 00:05" in out
    assert "[" not in out and "ETA" not in out and "/" not in out


def test_bytes_are_human_readable():
    stream, clock = FakeTTY(), FakeClock()
    with Progress(3 * 1024 * 1024, stream=stream, unit="B", clock=clock) as bar:
        clock.now += 1
        bar.update(1536 * 1024)
    assert "1.5 MiB/3.0 MiB" in stream.getvalue()


def test_zero_total_does_not_divide_by_zero():
    stream = FakeTTY()
    with Progress(0, stream=stream) as bar:
        bar.update(0)
    assert "0/0" in stream.getvalue()


@pytest.mark.parametrize(
    "n, text",
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (53_533_754, "51.1 MiB"), (3 * 1024**3, "3.0 GiB")],
)
def test_human_bytes(n, text):
    assert human_bytes(n) == text


def test_line_is_cut_to_terminal_width(monkeypatch):
    class NarrowTTY(FakeTTY):
        def fileno(self):
            return 99

    monkeypatch.setattr("os.get_terminal_size", lambda fd: os.terminal_size((30, 24)))
    stream = NarrowTTY()
    with Progress(10, label="a rather long label", stream=stream) as bar:
        bar.update(status="and a status that would wrap")
    lines = stream.getvalue().replace("\n", "").split("\r")[1:]
    assert lines and all(len(line) <= 29 for line in lines)


# --------------------------------------------------------------------------- in a notebook cell


class FakeLine:
    """What display.NotebookLine is to Progress: made with the first line, then updated."""

    made = None  # the lines made, a list the `lines` fixture provides

    def __init__(self, text):
        self.texts = [text]
        FakeLine.made.append(self)

    def update(self, text):
        self.texts.append(text)


@pytest.fixture
def lines(monkeypatch):
    made = []
    monkeypatch.setattr(FakeLine, "made", made)
    return made


def test_display_gets_one_line_updated_in_place_and_throttled(lines):
    stream, clock = FakeTTY(), FakeClock()
    bar = Progress(1000, label="dream", stream=stream, clock=clock, display=FakeLine)
    assert bar.enabled
    for k in range(1000):
        clock.now += 0.001  # ~1 s in all: about 10 redraws allowed
        bar.update(status=f"step {k + 1}")
    assert len(lines) == 1
    texts = lines[0].texts
    assert 5 <= len(texts) <= 12
    assert texts[0].startswith("dream [") and "1/1000" in texts[0]
    assert "1000/1000" in texts[-1] and texts[-1].endswith("step 1000")
    assert all("\r" not in t and "\n" not in t for t in texts)
    bar.close()
    assert len(lines) == 1 and "1000/1000" in lines[0].texts[-1]
    assert stream.getvalue() == ""  # the display replaces the stream, newline included


def test_display_close_without_updates_draws_once(lines):
    with Progress(4, label="x", display=FakeLine, clock=FakeClock()):
        pass
    assert [line.texts for line in lines] == [["x [........................] 0/4 00:00"]]


def test_display_disabled_draws_nothing(lines):
    with Progress(3, display=FakeLine, enabled=False) as bar:
        bar.update(3)
    assert lines == []


def test_notebook_line_is_used_in_a_kernel_only_for_the_default_stream(monkeypatch, lines):
    from deepdream_onnx import display

    monkeypatch.setattr(display, "in_notebook", lambda: True)
    monkeypatch.setattr(display, "NotebookLine", FakeLine)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    with Progress(2, label="dream") as bar:  # what the CLI and the notebook construct
        bar.update(2)
    assert len(lines) == 1 and "2/2" in lines[0].texts[-1]
    assert sys.stderr.getvalue() == ""

    given = io.StringIO()  # a stream passed on purpose keeps today's rule: not a terminal, silent
    with Progress(2, stream=given) as bar:
        bar.update(2)
    with Progress(2, enabled=False) as bar:
        bar.update(2)
    assert len(lines) == 1 and given.getvalue() == ""


def test_a_terminal_wins_over_a_kernel(monkeypatch, lines):
    from deepdream_onnx import display

    monkeypatch.setattr(display, "in_notebook", lambda: True)
    monkeypatch.setattr(display, "NotebookLine", FakeLine)
    monkeypatch.setattr("sys.stderr", FakeTTY())
    with Progress(2) as bar:
        bar.update(2)
    assert lines == [] and "2/2" in sys.stderr.getvalue()


def test_outside_a_kernel_default_progress_stays_silent(monkeypatch, lines):
    monkeypatch.setattr("sys.stderr", io.StringIO())
    with Progress(2) as bar:  # pytest is no kernel, IPython imported or not
        assert not bar.enabled
        bar.update(2)
    assert sys.stderr.getvalue() == ""
