import psutil, os
def pytest_runtest_teardown(item, nextitem):
    kids = psutil.Process(os.getpid()).children(recursive=True)
    if kids:
        print(f"\nLEFT after {item.nodeid}: {[(k.pid, k.name(), k.status()) for k in kids]}")
