"""Speed and memory benchmarks (not tests). Each module has ``main(argv=None)`` that prints a
table and writes JSON; run them with ``voxsep bench NAME`` or ``python -m bench.NAME``."""
