import sys

from metaloop.cli.main import main

sys.exit(main())
