"""`python -m codegemma ...` (also what torchrun runs: `torchrun -m codegemma train ...`)."""

import sys

from codegemma.cli import main

sys.exit(main())
