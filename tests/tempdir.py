"""A temporary path outside the working directory, removed after the test.

`SynchronousTestCase.mktemp` makes a path relative to the working directory:
under trial that is ``_trial_temp``, but under pytest it is the repository,
which the tests would litter.  This gives the same kind of path (not yet
created) in the system's temporary directory under both runners.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.trial.unittest import SynchronousTestCase


def temp_path(case: SynchronousTestCase) -> str:
    """A path that does not exist yet, in a directory removed when `case` ends."""
    base = tempfile.mkdtemp(prefix="ingest-test-")
    case.addCleanup(shutil.rmtree, base, True)
    return os.path.join(base, "temp")
