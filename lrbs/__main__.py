import sys

from lrbs.cli import main

sys.exit(main())
