import sys

from chunkflow.app.cli import main

sys.exit(main())
