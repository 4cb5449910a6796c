"""``python -m fdcam``: the command line of `fdcam.cli`."""

from fdcam.cli import main

raise SystemExit(main())
