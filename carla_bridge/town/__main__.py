"""`python -m carla_bridge.town`: regenerate or check the built-in town's committed assets.

The command line lives in `assets.py`; this launcher exists so that running it does not import
`carla_bridge.town.assets` twice (once through the package, once as `__main__`).
"""

import sys

from carla_bridge.town.assets import main

sys.exit(main())
