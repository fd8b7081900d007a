"""Fail if the ``openbeepboop`` meta-package wheel ships any code."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path


def main(dist: Path) -> int:
    (wheel,) = dist.glob("openbeepboop-[0-9]*.whl")
    code = [n for n in zipfile.ZipFile(wheel).namelist() if ".dist-info/" not in n]
    if code:
        print(f"{wheel.name} ships files outside its metadata: {code}", file=sys.stderr)
        return 1
    print(f"{wheel.name}: metadata only")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1])))
