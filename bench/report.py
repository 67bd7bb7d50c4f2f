"""Writes one benchmark's section of docs/benchmarks.md, leaving the other benchmarks' sections alone."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]


def command_line() -> str:
    """The command that ran this benchmark, with paths inside the repository shown relative to it."""

    def shown(path: Path) -> str:
        return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)

    return shlex.join([shown(Path(sys.executable)), shown(Path(sys.argv[0]).resolve()), *sys.argv[1:]])


def machine() -> tuple[int, str]:
    """CPUs this process may use, and the CPU model, for a benchmark's header."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return len(os.sched_getaffinity(0)), model


def write_section(path: Path, name: str, section: str) -> None:
    """Replace the section between `<!-- name:start -->` and `<!-- name:end -->`, or append it.

    The file is read right before it is replaced (atomically), so a concurrent benchmark's section survives.
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{section.strip()}\n{end}\n"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1].removeprefix("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    scratch.write_text(text, encoding="utf-8")
    os.replace(scratch, path)


def in_turns(targets: Mapping[str, T], rounds: int) -> Iterator[tuple[str, T]]:
    """Every target once a round, each round starting one target later (no target always runs first, so
    drift on a shared machine falls on all alike); says on stderr which runs."""
    order = list(targets.items())
    for round_ in range(rounds):
        shift = round_ % len(order)
        for name, target in order[shift:] + order[:shift]:
            print(f"[bench] round {round_ + 1}: {name}", file=sys.stderr, flush=True)
            yield name, target
