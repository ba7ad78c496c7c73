"""`python -m strop ...`, the same as the `strop` command; what `accelerate launch -m strop fit ...` runs in
each process."""

from strop.cli import run

run()
