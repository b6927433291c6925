import sys

from horror.cli import main

sys.exit(main())
