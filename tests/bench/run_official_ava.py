"""Run the ActivityNet get_ava_performance.py unchanged under NumPy 2 (aliases removed in NumPy 1.24/2.0)."""
import runpy, sys, numpy as np
ref = sys.argv[1]                      # .../Evaluation
for name, value in dict(bool=bool, float=float, int=int, NAN=np.nan).items():
    if name not in np.__dict__: setattr(np, name, value)
sys.path[:0] = [ref, ref + "/ava"]
sys.argv = [ref + "/get_ava_performance.py"] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
