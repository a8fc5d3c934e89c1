"""The reliability tests' project: an empty folder wired to the test's database, whose CLI runs
are real processes (``project.cli``/``project.spawn``) with findable backends."""

from __future__ import annotations

import pytest

from helpers import ProjectDir


@pytest.fixture
def project(project_dir: ProjectDir) -> ProjectDir:
    return project_dir
