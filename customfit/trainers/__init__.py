"""The plumbing every task family needs from one framework, written once per framework.

A family's engine file (customfit/tasks/<family>/with_<framework>.py) holds what that framework's
tutorial holds: the networks, the losses, the step and the epoch loop. What the workbench needs on
top (weights in the canonical layout, optimizer state as named arrays, the parity hook, several
devices, precision) comes from here, the way Keras keeps one Trainer per backend in
keras/src/backend/<name>/trainer.py.
"""
