"""``python -m bench [OPTIONS]``: the same as ``assistant-sessions bench [OPTIONS]``."""

import sys

from assistant_sessions_bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
