import sys

from echogen.cli.main import main

sys.exit(main())
