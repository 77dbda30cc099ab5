import sys

from meditron.cli import main

sys.exit(main())
