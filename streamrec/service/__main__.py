"""`python -m streamrec.service`: the consumer service (what `streamrec run` runs)."""

import sys

from streamrec.service.main import main

sys.exit(main())
