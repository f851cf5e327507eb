"""The installed distributions the named ones need, recursively, as name==version (this venv's)."""

from __future__ import annotations

import importlib.metadata as metadata
import sys

from packaging.requirements import Requirement


def closure(roots: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in found:
            continue
        dist = metadata.distribution(name)
        found[key] = dist.version
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return found


if __name__ == "__main__":
    print(" ".join(f"{name}=={version}" for name, version in sorted(closure(sys.argv[1:]).items())))
