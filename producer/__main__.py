"""``python -m producer`` = the ``ascent`` command."""

import sys

from producer.cli import main

sys.exit(main())
