import sys

from voxsep.cli import main

sys.exit(main())
