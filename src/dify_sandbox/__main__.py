"""``python -m dify_sandbox``: the same as the ``dify-sandbox`` command."""

import sys

from dify_sandbox.cli import main

# The guard matters: worker processes are spawned, and spawn re-imports the main module.
if __name__ == "__main__":
    sys.exit(main())
