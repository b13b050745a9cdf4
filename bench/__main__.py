"""``python -m bench``: see ``bench/README.md`` and ``python -m bench --help``."""

import sys

from bench.harness import main

sys.exit(main())
