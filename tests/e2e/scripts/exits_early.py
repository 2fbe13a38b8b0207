import sys

if len(sys.argv) < 2:
    print("usage: exits_early.py DATA_DIR", file=sys.stderr)
    sys.exit(2)
