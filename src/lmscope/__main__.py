"""`python -m lmscope` (also what `torchrun -m lmscope ...` runs)."""

from lmscope.cli import main

main()
