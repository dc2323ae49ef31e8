"""``python -m cerebelum build app.py -o app.wasm``, ``python -m cerebelum
worker app.py --queue Q`` and ``python -m cerebelum replay ID app.py``."""

import sys

from .cli import main

sys.exit(main())
