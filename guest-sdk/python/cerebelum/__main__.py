"""``python -m cerebelum build app.py -o app.wasm`` and
``python -m cerebelum worker app.py --queue Q``."""

import sys

from .cli import main

sys.exit(main())
