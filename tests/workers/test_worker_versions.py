"""The worker tests run with the versions the worker images run.

``deploy/docker/worker-constraints.txt`` is the one version set: the images install with it
and ``scripts/test`` installs the project with it (all but torch: CI runs the CPU build of its
own torch, the images the CUDA base image's). An installed version that differs means the
worker tests here no longer say anything about the images.
"""

from __future__ import annotations

from importlib import metadata

import pytest

from tests.workers.test_dockerfiles import constraints

NOT_MATCHED_IN_CI = {"torch"}  # CPU build here, the CUDA base image's version in the images


@pytest.mark.parametrize("name", sorted(set(constraints()) - NOT_MATCHED_IN_CI))
def test_installed_version_is_the_images(name: str) -> None:
    pinned = constraints()[name]
    installed = metadata.version(name)
    assert installed == pinned, (
        f"{name} {installed} is installed but the worker images run {pinned}; run scripts/test "
        "(it installs with deploy/docker/worker-constraints.txt) or change the pin")
