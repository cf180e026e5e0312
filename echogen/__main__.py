import sys

from echogen.cli import main

sys.exit(main())
