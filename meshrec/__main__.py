import sys

from meshrec.cli import main

sys.exit(main())
