"""A Python process with no DataLoader at all."""

import time

from _common import Progress, bounded_life

if __name__ == "__main__":
    bounded_life()
    progress = Progress()
    step = 0
    while True:
        step += 1
        sum(range(2000))
        time.sleep(0.05)
        progress.step(step)
