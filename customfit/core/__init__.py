"""The library: what a user imports to write a cf.Model.

The model (model.py) and its updates (update.py), the ops (grad, value_and_grad, divergence,
frozen), the stateless scopes behind them, loss scaling, and one small step file per Keras backend
in backends/ (the only place the library imports tensorflow, torch or jax). What the steps run is
resolved once per compile: plan.py (the updates, their logged names, trackers and optimizers),
step_plan.py (what each step does with them), optimizer_group.py (several optimizers as one),
data_spec.py (the batch structure a saved model is rebuilt from). It knows nothing of tasks, runs or the
command line: nothing here imports from the rest of customfit (the workbench).
"""
