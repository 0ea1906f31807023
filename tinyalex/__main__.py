"""`python -m tinyalex`: the same as the `tinyalex` command."""
import sys

from tinyalex.train.cli import main

sys.exit(main())
