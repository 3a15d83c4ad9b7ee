"""`casegate replay`'s progress bar: the rate and the time left, on a terminal only."""

from __future__ import annotations

import io

from gateway.cli.replay import Progress


class Terminal(io.StringIO):
    """Text written to what says it is a terminal."""

    def isatty(self) -> bool:
        return True


class Clock:
    """Seconds that the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_bar_shows_rate_and_time_left() -> None:
    """After 250 of 1000 messages in 5 s: 50 messages/s and 0:15 left."""
    clock, terminal = Clock(), Terminal()
    progress = Progress(1000, terminal, clock)
    clock.now += 5
    progress.update(250)
    assert terminal.getvalue() == (
        "\r[#######-----------------------] 250/1000  50 messages/s  0:15 left\x1b[K")


def test_the_bar_redraws_at_most_five_times_a_second_and_always_at_the_end() -> None:
    """Updates within 0.2 s of the last drawing are skipped; the last message is drawn."""
    clock, terminal = Clock(), Terminal()
    progress = Progress(3, terminal, clock)
    clock.now += 1
    progress.update(1)
    progress.update(2)
    progress.update(3)
    progress.finish()
    lines = terminal.getvalue().split("\r")[1:]
    assert [line.split("]")[1].split()[0] for line in lines] == ["1/3", "3/3"]
    assert lines[-1].endswith("0:00 left\x1b[K\n")


def test_nothing_is_written_when_stderr_is_not_a_terminal() -> None:
    """Piped or redirected, replay prints no progress at all."""
    stream = io.StringIO()
    progress = Progress(10, stream, Clock())
    progress.update(10)
    progress.finish()
    assert stream.getvalue() == ""
