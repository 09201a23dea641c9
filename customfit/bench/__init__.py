"""`customfit bench`: training throughput per task x engine x batch size x compilation mode.

runner.py plans the cells and starts one process per engine (worker.py), which times its cells
and, beside them, stock Keras's compile(loss=...)/fit() on the same network and backend
(stock.py); modes.py switches an engine between eager and compiled steps; penalty.py is the
workload with a gradient inside (a WGAN-GP step); report.py writes bench.json and bench.md.
"""
