"""`python -m duration.deployer --model NAME`: the deployer's process (`duration serve start`
starts it)."""

import sys

from duration.deployer.receiver import main

if __name__ == "__main__":
    sys.exit(main())
