import sys

from chunkflow.cli import main

sys.exit(main())
