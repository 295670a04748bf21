import sys

from machinewatch.cli import main

sys.exit(main())
