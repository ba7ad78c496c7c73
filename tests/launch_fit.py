"""`strop ...` in one process of a multi-process launch, dying like a killed machine (os._exit, no cleanup) right
after the main process has written its Nth epoch checkpoint when STROP_TEST_DIE_AFTER_CHECKPOINT=N: what
tests/test_distributed.py resumes from. Without the variable, the same as `python -m strop`."""

import os
import sys

import strop.train.loop as loop
from strop.cli import main

DIE_AFTER = int(os.environ.get("STROP_TEST_DIE_AFTER_CHECKPOINT", "0"))

if DIE_AFTER:
    save, written = loop.save_checkpoint, []

    def save_then_die(*args, **kwargs):
        save(*args, **kwargs)
        written.append(1)
        if len(written) == DIE_AFTER:
            os._exit(9)  # the launcher then stops the other processes

    loop.save_checkpoint = save_then_die

sys.exit(main())
