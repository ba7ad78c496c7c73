"""`python -m strop ...`, the same as the `strop` command; what `accelerate launch -m strop fit ...` runs in
each process."""

import sys

from strop.cli import main

sys.exit(main())
