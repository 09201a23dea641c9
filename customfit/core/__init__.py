"""The library: what a user imports to write a cf.Model.

The model and its updates, the ops (grad, value_and_grad, divergence, frozen), the stateless
scopes behind them, loss scaling, and one small step file per Keras backend in backends/ (the only
place the library imports tensorflow, torch or jax). It knows nothing of tasks, runs or the
command line: nothing here imports from the rest of customfit (the workbench).
"""
