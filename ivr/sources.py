"""Where the engine gets flows: the working files (check, simulate, test) or published versions."""

from __future__ import annotations

from pathlib import Path

from ivr.loader import FlowInvalid, FlowProblem
from ivr.model import Flow
from ivr.validator import CheckContext, check_file

WORKING_VERSION = 0
"""The version number given to an unpublished working file."""


class DirectoryFlows:
    """Flows read from a folder and checked in full before use; version 0 means 'working copy'."""

    def __init__(self, flows_dir: Path, queues: frozenset[str] | None) -> None:
        self.flows_dir = flows_dir
        self.context = CheckContext.for_directory(flows_dir, queues)
        self._cache: dict[str, Flow] = {}

    def path(self, name: str) -> Path:
        return self.flows_dir / f"{name}.yaml"

    def load(self, name: str) -> Flow:
        if name not in self._cache:
            path = self.path(name)
            if not path.is_file():
                raise FlowInvalid([FlowProblem(str(path), 1, 1, f"no flow named {name!r}")])
            self._cache[name] = check_file(path, self.context).flow
        return self._cache[name]

    def active(self, name: str) -> tuple[int, Flow]:
        return WORKING_VERSION, self.load(name)

    def version(self, name: str, version: int) -> Flow:
        return self.load(name)
