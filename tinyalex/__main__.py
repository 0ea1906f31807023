"""`python -m tinyalex`: the same as the `tinyalex` command."""
import sys

from .cli import main

sys.exit(main())
