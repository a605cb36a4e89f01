"""``python -m ascent.producer`` = the ``ascent`` command."""

import sys

from ascent.producer.cli import main

sys.exit(main())
