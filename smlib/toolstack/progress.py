"""Progress of a long transfer on stderr: bytes done / total, rate, ETA.

On a terminal the line is redrawn in place (at most every REDRAW seconds);
asked for on a pipe or a log (``--progress``), it is one plain line per
LOG_EVERY seconds; otherwise nothing is written at all.
"""

import time
from typing import Callable, Optional, TextIO

REDRAW = 0.2      # seconds between redraws on a terminal
LOG_EVERY = 2.0   # seconds between lines when not on a terminal

Clock = Callable[[], float]


def human_bytes(count: float) -> str:
    """1536 -> '1.5 KiB'; binary units, as sizes are given to smctl."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"  # not reached: GiB is the largest unit used


def clock_text(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressMeter:
    """A callable (done, total) that reports on a stream; see the module doc."""

    def __init__(self, stream: TextIO, label: str, *, redraw: bool,
                 clock: Clock = time.monotonic) -> None:
        self.stream = stream
        self.label = label
        self.redraw = redraw
        self.clock = clock
        self.started = clock()
        self.last_shown: Optional[float] = None
        self.finished = False

    def line(self, done: int, total: int, now: float) -> str:
        elapsed = max(now - self.started, 1e-6)
        rate = done / elapsed
        share = done / total if total else 1.0
        text = (f"{self.label}: {human_bytes(done)} / {human_bytes(total)} "
                f"{share * 100:5.1f}%  {human_bytes(rate)}/s")
        if done >= total:
            return f"{text}  done in {clock_text(elapsed)}"
        if rate > 0 and done > 0:
            return f"{text}  ETA {clock_text((total - done) / rate)}"
        return f"{text}  ETA --:--"

    def __call__(self, done: int, total: int) -> None:
        if self.finished:
            return
        now = self.clock()
        last = done >= total
        every = REDRAW if self.redraw else LOG_EVERY
        if not last and self.last_shown is not None and now - self.last_shown < every:
            return
        self.last_shown = now
        text = self.line(done, total, now)
        if self.redraw:
            # Pad over a longer previous line; newline only at the end.
            self.stream.write("\r" + text.ljust(79) + ("\n" if last else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self.finished = last

    def interrupted(self) -> None:
        """End an unfinished redrawn line so the error starts on its own."""
        if self.redraw and self.last_shown is not None and not self.finished:
            self.stream.write("\n")
            self.stream.flush()
        self.finished = True


def meter(stream: TextIO, label: str, mode: str = "auto") -> Optional[ProgressMeter]:
    """mode: 'auto' (a terminal only), 'always' (--progress), 'never' (--quiet)."""
    if mode == "never":
        return None
    tty = stream.isatty()
    if mode == "auto" and not tty:
        return None
    return ProgressMeter(stream, label, redraw=tty)
