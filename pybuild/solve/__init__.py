"""The solver: runs a plan's ops in dependency order on a bounded thread pool.

`scheduler.solve()` is the entry point. It knows ops only by digest and inputs; what an op does is the
caller's `run_op` (the worker wires op types to implementations). It never imports the frontend.
"""
