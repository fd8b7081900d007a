"""Summarise a py-spy folded-stacks profile: where the samples went.

``python bench/profile_top.py PROFILE.folded [--top 25] [--match TEXT]`` prints
the functions with the most samples on top of the stack (self time) and the
most samples anywhere in the stack (inclusive time), as shares of all
samples. ``--match`` keeps only stacks containing TEXT (e.g. a route).
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path


def _frames(stack: str) -> list[str]:
    # py-spy raw lines: "thread;frame (file:line);frame ... COUNT"; drop line numbers
    # so one function is one entry.
    frames = []
    for frame in stack.split(";"):
        name, _, where = frame.partition(" (")
        path = where.split(":")[0].rstrip(")")
        short = "/".join(path.split("/")[-2:])
        frames.append(f"{name} ({short})" if where else name)
    return frames


def main() -> None:
    """Print the top self and inclusive functions."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", default="")
    args = parser.parse_args()
    own: collections.Counter[str] = collections.Counter()
    anywhere: collections.Counter[str] = collections.Counter()
    total = 0
    for line in args.profile.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit() or args.match not in stack:
            continue
        count = int(count_text)
        frames = _frames(stack)
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            anywhere[frame] += count
    print(f"{total} samples")
    print("\nself:")
    for name, count in own.most_common(args.top):
        print(f"  {count / total:6.1%}  {name}")
    print("\ninclusive:")
    for name, count in anywhere.most_common(args.top):
        print(f"  {count / total:6.1%}  {name}")


if __name__ == "__main__":
    main()
