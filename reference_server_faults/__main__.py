"""vfio-user-faulty-server: the reference server with named defects.

vfio-user-faulty-server (--socket-path=PATH | --fd=FDNUM) --fault NAME [--fault NAME ...]
                        [the options of vfio-user-reference-server]
vfio-user-faulty-server --list-faults
"""

from __future__ import annotations

import sys

from ._process import main

if __name__ == "__main__":
    sys.exit(main())
