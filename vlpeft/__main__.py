import sys

from vlpeft.cli import main

sys.exit(main())
