"""What a board command is doing while it does it: a live line on a terminal, plain lines elsewhere.

`precast deploy` builds, connects, compares, copies and watches. On a terminal one line
(rich, as esptool and mpremote show theirs) says which step runs and, while a file is
copied, its bytes; each finished file is a line kept above it, and the live line goes
when the command ends. Elsewhere (a pipe, a log, CI) only the lines to keep are printed,
each flushed as soon as it is known.
"""

from __future__ import annotations

from typing import Protocol, TextIO


class Progress(Protocol):
    """Where a command says what it is doing."""

    def step(self, text: str) -> None:
        """The step under way (a terminal shows it until the next one)."""

    def transfer(self, text: str, done: int, total: int) -> None:
        """A copy under way: `done` of `total` bytes (a terminal shows it with a bar)."""

    def line(self, text: str) -> None:
        """A line to keep, printed now."""

    def close(self) -> None:
        """Take the live line away (the kept lines stay)."""


class PlainProgress:
    """Lines only, each flushed: for pipes and logs."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def step(self, text: str) -> None:
        pass

    def transfer(self, text: str, done: int, total: int) -> None:
        pass

    def line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def close(self) -> None:
        pass


class LiveProgress:
    """A live line (rich) under the kept lines: a spinner and the step, or a copy's bar."""

    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.progress import Progress, ProgressColumn, SpinnerColumn, Task, TextColumn
        from rich.progress_bar import ProgressBar
        from rich.text import Text

        class CopyBar(ProgressColumn):
            """A bar for a copy; none for a step, which has no total."""

            def render(self, task: Task) -> ProgressBar | Text:
                if task.total is None:
                    return Text("")
                return ProgressBar(total=task.total, completed=task.completed, width=24)

        self.console = Console(file=out, highlight=False)
        self.bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            CopyBar(),
            TextColumn("{task.fields[bytes]}"),
            console=self.console,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        # Two rows, one shown at a time: a step (no total) and a copy. Each change is drawn
        # at once, not at the next of rich's 10 refreshes a second: a chunk takes 11 ms on
        # the virtual board (a whole file can fall between two refreshes), 0.2 s or more at
        # 115200 baud.
        self.stepping = self.bar.add_task("", total=None, bytes="")
        self.copying = self.bar.add_task("", total=1, bytes="", visible=False)
        self.bar.start()

    def step(self, text: str) -> None:
        self.bar.update(self.copying, visible=False)
        self.bar.update(self.stepping, description=text, visible=True, refresh=True)

    def transfer(self, text: str, done: int, total: int) -> None:
        self.bar.update(self.stepping, visible=False)
        self.bar.update(
            self.copying,
            description=text,
            total=max(total, 1),
            completed=done,
            bytes=f"{done:,}/{total:,} bytes",
            visible=True,
            refresh=True,
        )

    def line(self, text: str) -> None:
        self.console.print(text, markup=False, soft_wrap=True)

    def close(self) -> None:
        self.bar.stop()


def progress_for(out: TextIO) -> Progress:
    """A live line when `out` is a terminal, plain lines otherwise."""
    return LiveProgress(out) if out.isatty() else PlainProgress(out)
