"""`python -m gpt2` is the `gpt2` command (also what torchrun runs: `torchrun -m gpt2 train ...`)."""

import sys

from gpt2.cli import main

sys.exit(main())
