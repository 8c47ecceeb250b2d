import sys

from acmr_core.cli import main

sys.exit(main())
