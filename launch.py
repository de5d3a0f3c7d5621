"""Start the service the way Fooocus users are used to: ``python launch.py [flags]``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from fooocus_api.cli import main

if __name__ == "__main__":
    main()
