import sys

from context_harness.daemon.app import main

sys.exit(main())
